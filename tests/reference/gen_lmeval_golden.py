#!/usr/bin/env python3
# Reference goldens for `loopus eval` from lm-evaluation-harness itself.
# SPDX-License-Identifier: MIT
"""lm-evaluation-harness reference goldens for loopus's evaluation harness (issue 11).

Purpose
-------
`loopus eval` re-implements, in C++, the zero-shot log-likelihood tasks of
EleutherAI's lm-evaluation-harness (lm-eval). This script makes lm-eval 0.4.13
*itself* score the local data files that loopus reads (LOOPUS_DATA_DIR/eval, see
shared/data/PROVENANCE.md section 4), and records for every request the strings,
the token ids lm-eval fed, the log-likelihood and is_greedy, per document the
metric values lm-eval's own process_results returned, and the aggregate metrics
with stderr as lm-eval reports them.

How lm-eval is made to read the local files
-------------------------------------------
Each data file is converted, in file order, into the schema of the Hugging Face
dataset the lm-eval task expects (below), written as JSON lines into a work
folder, and the task is built from lm-eval's OWN task YAML (loaded with
lm_eval.tasks._yaml_loader.load_yaml, so `include:` and `!function` resolve to
lm-eval's own utils.py) with only the dataset source replaced:
`dataset_path: json`, `dataset_name: None`,
`dataset_kwargs: {data_files: {<split>: <file>}}`. Everything else - templates,
process_docs, target delimiter, metrics, aggregation - is lm-eval's. The model is
lm-eval's HFLM (lm_eval.models.huggingface) around a transformers model loaded
from the GGUF file (f32, CPU, batch size 1, default add_bos_token=None, default
max_length = the model config's max_position_embeddings), and
lm_eval.evaluator.simple_evaluate(limit=N, log_samples=True,
bootstrap_iters=100000) runs it (limit = the first N documents in file order).

Data mapping (data file -> HF schema) and where it cannot be exact
------------------------------------------------------------------
* arc_easy / arc_challenge (MosaicML ICL jsonl, allenai/ai2_arc test):
  question = query minus its "Question: " prefix, choices.text = choices,
  choices.label = A, B, C, ..., answerKey = label[gold]. Exact (lm-eval only uses
  the question, the texts and the answer index).
* openbookqa (MosaicML, allenai/openbookqa main test): question_stem = query,
  choices as ARC. Exact.
* piqa (original jsonl + labels, baber/piqa validation): goal/sol1/sol2/label.
  Exact.
* hellaswag (llama.cpp text, klosax/hellaswag_text_data, made by
  extract_hellaswag.cpp from rowanz/hellaswag val): line 1 is
  preprocess(activity_label) + ": " + preprocess(ctx), where klosax's preprocess
  deletes "[header]", "[step]", "[substeps]", turns " [title]" into ". ", deletes
  "[title] " and "[title].", collapses "  " once and drops one leading space.
  lm-eval builds preprocess(activity_label + ": " + ctx_a + " " +
  ctx_b.capitalize()) and preprocess(ending) with ITS preprocess (strip,
  " [title]" -> ". ", delete every [...], collapse "  " once).
  Reconstruction: activity_label = text before the first ": ".
  - ActivityNet items (file items 0-3242; every activity label that is not one of
    the 19 WikiHow categories): the context always ends in an incomplete
    lower-case noun phrase (rowanz: "ctx_b"); ctx_a = up to and including the last
    sentence end ([.!?] + closing quotes/brackets + whitespace), ctx_b = the rest.
    lm-eval's capitalize() then upper-cases the first letter of ctx_b. This is
    exact for all 3243 items except 7 whose ctx_b begins with a digit or a quote
    (items 1692, 1828, 2346, 2421, 2531, 2532, 3168, e.g. '" power dribble',
    '5 the guy'; see `--check-data`): there the original split point is
    ambiguous (capitalize() may have hit a later word).
  - WikiHow items (6799, items 3243-10041; activity label in WIKIHOW_LABELS):
    ctx_b is "" in the original, so ctx_a = the context. NOT recoverable: an
    ending (or context) that began or ended with a [step]/[substeps]/[title]
    tag. lm-eval keeps the space next to the deleted tag (" Foo", "Foo. "), so
    its continuation is "  Foo" (two spaces) or ends with a space; klosax
    dropped those spaces. How many endings are affected cannot be told from the
    file (HellaSwag WikiHow endings often start with a tag). Also one ending
    (item 4121, file line 24730) holds "  ", left by klosax from 3+ spaces; it is mapped to
    "   " so that lm-eval's single collapse gives back "  ". The goldens' first
    documents are all ActivityNet items.
* winogrande (MosaicML partial-scoring format, allenai/winogrande xl validation):
  sentence = P + "_" + (" " unless the continuation starts with punctuation) +
  continuation, option1/option2 = the two context options minus P, where P is
  their common prefix cut back to a word start; answer = str(gold + 1). lm-eval's
  requests (choice = sentence[:idx] + option, target = sentence[idx+1:].strip())
  are then exactly the MosaicML strings. Exact as long as MosaicML built them
  that way (no item has leading/trailing spaces that would betray otherwise).
* copa (MosaicML, super_glue copa validation, 100 items):
  query = "<premise minus its last char>, therefore|because". premise = that stem
  + "." (lm-eval drops the last char again: its context is "<stem> therefore",
  WITHOUT MosaicML's comma), question = effect|cause, choice1/choice2 = the
  choices (MosaicML already lower-cased their first letter, which lm-eval's
  convert_choice also does), label = gold. Exact for all 100. NB lm-eval's copa
  doc_to_choice returns " " + choice and the target delimiter adds another
  " ": the continuation is "  the toilet filled with water." (two spaces).
* wsc273 (MosaicML, lighteval/winograd_wsc wsc273 test): HF text is
  txt1 + " " + pronoun + " " + txt2, pronoun_loc = len(txt1) + 1; lm-eval
  normalises the options (possessive "'s", lower-cases a leading
  A/An/The/She/He/... unless the pronoun starts a sentence), choices =
  text[:pronoun_loc] + option, target = text[pronoun_loc + len(pronoun):] which
  keeps the space after the pronoun, so lm-eval's continuation is " " + " " +
  txt2 (TWO spaces). The MosaicML file has the normalised choices and
  txt2.strip(); the pronoun is not stored, so text = P + "_" + " " +
  continuation with pronoun "_" (a placeholder that lm-eval's normalisation
  leaves alone), options = context options minus P. Requests are exact if
  MosaicML's options equal lm-eval's normalised lighteval options; the
  lighteval rows are not available offline to confirm (an older
  WSCollection.xml differs from MosaicML in 130 of 273 option wordings, e.g.
  "the brown suitcase" vs "the suitcase", so MosaicML followed a later revision
  of Davis's XML, as HF's winograd_wsc does).
* lambada_openai (OpenAI jsonl, EleutherAI/lambada_openai default): text. Exact.
* wikitext (wikitext-2-raw test as HF rows, CRLF, blank rows dropped;
  EleutherAI/wikitext_document_level wikitext-2-raw-v1 test): the raw Salesforce
  file is rebuilt - blank lines are " "; the file starts with one; every heading
  line (" = X = ", " = = X = = ", ...) is preceded and followed by one, and a
  top-level heading other than the first by two; the file ends with " \\n".
  Three exceptions, found by checking the rule against the line structure of
  wiki.test.tokens (pytorch/examples word_language_model/data/wikitext-2/test.txt,
  4358 lines, used only for that check): the two formula lines
  " = 1 rad / s and a nominal impedance k = " and
  " = 1 henry and capacitance C = " are not headings (no blank lines around
  them), and " = The Hustler ( film ) = " has one blank line before it, not two.
  With these the rebuilt file has the 4358 lines of the HF split. It is then
  split the way EleutherAI's wikitext_document_level.py does:
  data.split("\\n"); a line whose
  line.replace("= = =", "===").replace("= =", "==").strip() starts with "= " and
  ends with " =" starts a new page (the two formula lines do too); the text
  before it is yielded if it is not blank; the last page is yielded as is.
  This gives 62 pages.
* mmlu (tests/data/mmlu_small, hand-made, standard MMLU CSV without header:
  question, A, B, C, D, answer letter): cais/mmlu schema question, subject,
  choices [A, B, C, D], answer = index of the letter; task = lm-eval's
  mmlu/default/mmlu_<subject>.yaml (zero-shot "default" template with the
  subject description).

Models
------
* stories260K (LOOPUS_DATA_DIR/models/stories260K/stories260K.gguf): transformers
  cannot load the GGUF as it is, because tokenizer.ggml.padding_token_id is
  4294967295 (-1 as uint32): the tokenizer loader indexes the vocabulary with it
  (IndexError) and LlamaModel's nn.Embedding refuses padding_idx >= vocab. The
  script drops the pad token from transformers' GGUF special-token map before
  loading the tokenizer and sets config.pad_token_id = None before building the
  model; nothing else changes (the pad token plays no part in batch-size-1
  scoring).
* SmolLM2-135M-Instruct (LOOPUS_SMOLLM2_GGUF, default
  ~/.cache/loopus/models/SmolLM2-135M-Instruct.Q4_1.gguf): loaded as is;
  transformers dequantizes Q4_1 to f32.

Usage
-----
  cd <repo root>
  export LOOPUS_DATA_DIR=../shared/data            # the default
  # PY = a Python with lm_eval==0.4.13, torch, transformers, gguf, accelerate
  $PY tests/reference/gen_lmeval_golden.py --check-data      # conversions, counts, request checks
  TQDM_DISABLE=1 nice -n 10 $PY tests/reference/gen_lmeval_golden.py --model stories260K            # ~2 min
  TQDM_DISABLE=1 nice -n 10 $PY tests/reference/gen_lmeval_golden.py --model SmolLM2-135M-Instruct  # ~8 min
  # options: --tasks arc_easy,wikitext  --out tests/golden/lmeval  --work-dir DIR

Versions used for the committed goldens: lm_eval 0.4.13, transformers 5.25.0,
torch 2.15.0, datasets 5.2.0, gguf 0.19.0 (each golden records its own).
Output: tests/golden/lmeval/<model>/<task>.json; schema in
tests/golden/lmeval/README.md.
"""
import argparse
import bz2
import csv
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

WIKIHOW_LABELS = {
    "Personal Care and Style", "Family Life", "Food and Entertaining", "Computers and Electronics",
    "Health", "Home and Garden", "Finance and Business", "Pets and Animals",
    "Education and Communications", "Youth", "Sports and Fitness", "Relationships", "Work World",
    "Cars & Other Vehicles", "Travel", "Holidays and Traditions", "Philosophy and Religion",
    "Uncategorized", "Home,Categories",
}

# Non-empty lines of wiki.test.raw that match the heading shape but are not headings.
WIKITEXT_NOT_HEADINGS = {" = 1 rad / s and a nominal impedance k = ", " = 1 henry and capacitance C = "}
# Top-level headings preceded by one blank line instead of two.
WIKITEXT_ONE_BLANK_BEFORE = {" = The Hustler ( film ) = "}

MMLU_SUBJECTS = ["astronomy", "high_school_computer_science"]

# task -> (data file relative to LOOPUS_DATA_DIR, lm-eval yaml relative to lm_eval/tasks, split lm-eval evaluates)
TASKS = {
    "arc_easy": ("eval/mosaicml_icl/arc_easy.jsonl", "arc/arc_easy.yaml", "test"),
    "arc_challenge": ("eval/mosaicml_icl/arc_challenge.jsonl", "arc/arc_challenge.yaml", "test"),
    "hellaswag": ("eval/hellaswag/hellaswag_val_full.txt.bz2", "hellaswag/hellaswag.yaml", "validation"),
    "piqa": ("eval/piqa/valid.jsonl", "piqa/piqa.yaml", "validation"),
    "openbookqa": ("eval/mosaicml_icl/openbook_qa.jsonl", "openbookqa/openbookqa.yaml", "test"),
    "winogrande": ("eval/mosaicml_icl/winogrande.jsonl", "winogrande/default.yaml", "validation"),
    "copa": ("eval/mosaicml_icl/copa.jsonl", "super_glue/copa/default.yaml", "validation"),
    "wsc273": ("eval/mosaicml_icl/winograd_wsc.jsonl", "wsc273/default.yaml", "test"),
    "lambada_openai": ("eval/lambada/lambada_test.jsonl", "lambada/lambada_openai.yaml", "test"),
    "wikitext": ("eval/wikitext-2-raw/wiki.test.raw", "wikitext/wikitext.yaml", "test"),
}
# Extra run: wikitext with HFLM(max_length=WIKITEXT_SMALL_WINDOW) so that every model
# exercises the rolling-window rule with many windows.
WIKITEXT_SMALL_WINDOW = 256
MIN_REQUESTS = 200
N_DOCS_FIXED = {"copa": 100, "lambada_openai": 200, "wikitext": 3}

MODELS = {
    "stories260K": lambda data: (data / "models/stories260K", "stories260K.gguf"),
    "SmolLM2-135M-Instruct": lambda data: (
        Path(os.environ.get("LOOPUS_SMOLLM2_GGUF",
                            "~/.cache/loopus/models/SmolLM2-135M-Instruct.Q4_1.gguf")).expanduser().parent,
        Path(os.environ.get("LOOPUS_SMOLLM2_GGUF",
                            "~/.cache/loopus/models/SmolLM2-135M-Instruct.Q4_1.gguf")).name),
}


def data_dir() -> Path:
    d = os.environ.get("LOOPUS_DATA_DIR")
    return Path(d).expanduser().resolve() if d else (REPO / "../shared/data").resolve()


def jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------- converters
def conv_arc(path):
    docs = []
    for i, r in enumerate(jsonl(path)):
        q = r["query"]
        assert q.startswith("Question: "), (i, q)
        labels = [chr(ord("A") + k) for k in range(len(r["choices"]))]
        docs.append({"id": str(i), "question": q[len("Question: "):],
                     "choices": {"text": r["choices"], "label": labels}, "answerKey": labels[r["gold"]]})
    return docs, {}


def conv_obqa(path):
    docs = []
    for i, r in enumerate(jsonl(path)):
        labels = [chr(ord("A") + k) for k in range(len(r["choices"]))]
        docs.append({"id": str(i), "question_stem": r["query"],
                     "choices": {"text": r["choices"], "label": labels}, "answerKey": labels[r["gold"]]})
    return docs, {}


def conv_piqa(path):
    rows = jsonl(path)
    labels = [int(x) for x in Path(path).with_name("valid-labels.lst").read_text().split()]
    assert len(rows) == len(labels)
    return [{"goal": r["goal"], "sol1": r["sol1"], "sol2": r["sol2"], "label": y}
            for r, y in zip(rows, labels)], {}


_SENT_END = re.compile(r"[.!?][\"')\]]*\s")


def conv_hellaswag(path):
    lines = bz2.decompress(Path(path).read_bytes()).decode("utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    assert len(lines) % 6 == 0
    docs, stats = [], {"activitynet": 0, "wikihow": 0, "ambiguous_split": [], "double_space_fixed": []}
    for k in range(0, len(lines), 6):
        i = k // 6
        label, ctx = lines[k].split(": ", 1)
        endings = lines[k + 2:k + 6]
        fix = [j for j, e in enumerate(endings) if re.search(r"(?<! )  (?! )", e)]
        if fix:
            stats["double_space_fixed"].append(i)
            endings = [re.sub(r"(?<! )  (?! )", "   ", e) for e in endings]
        if label in WIKIHOW_LABELS:
            stats["wikihow"] += 1
            ctx_a, ctx_b, kind = re.sub(r"(?<! )  (?! )", "   ", ctx), "", "wikihow"
        else:
            stats["activitynet"] += 1
            ms = list(_SENT_END.finditer(ctx))
            assert ms and not re.search(r"[.!?][\"')\]]*$", ctx), (i, ctx)
            ctx_a, ctx_b, kind = ctx[:ms[-1].end()].rstrip(), ctx[ms[-1].end():], "activitynet"
            if not ctx_b[:1].isalpha():
                stats["ambiguous_split"].append(i)
        docs.append({"ind": i, "activity_label": label, "ctx_a": ctx_a, "ctx_b": ctx_b,
                     "ctx": ctx, "split": "val", "split_type": "", "label": lines[k + 1].strip(),
                     "endings": endings, "source_id": kind})
    return docs, stats


def _common_word_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    p = a[:n]
    # cut back to the start of a word so that each option starts with a whole word
    # (also when one option is a prefix of the other)
    return p[:p.rfind(" ") + 1] if " " in p else ""


def conv_winogrande(path):
    docs = []
    for i, r in enumerate(jsonl(path)):
        a, b = r["context_options"]
        p = _common_word_prefix(a, b)
        cont = r["continuation"]
        sep = "" if cont[:1] in ".,;:!?'\"" else " "
        docs.append({"sentence": p + "_" + sep + cont, "option1": a[len(p):], "option2": b[len(p):],
                     "answer": str(r["gold"] + 1)})
    return docs, {}


def conv_copa(path):
    docs = []
    for i, r in enumerate(jsonl(path)):
        q = r["query"]
        stem, conn = q.rsplit(", ", 1)
        assert conn in ("therefore", "because"), q
        docs.append({"premise": stem + ".", "choice1": r["choices"][0], "choice2": r["choices"][1],
                     "question": {"therefore": "effect", "because": "cause"}[conn], "idx": i,
                     "label": r["gold"]})
    return docs, {}


def conv_wsc273(path):
    docs = []
    for i, r in enumerate(jsonl(path)):
        a, b = r["context_options"]
        p = _common_word_prefix(a, b)
        pron = "_"
        text = p + pron + " " + r["continuation"]
        docs.append({"text": text, "pronoun": pron, "pronoun_loc": len(p), "quote": pron + " " + r["continuation"],
                     "quote_loc": len(p), "options": [a[len(p):], b[len(p):]], "label": r["gold"],
                     "source": "mosaicml"})
    return docs, {}


def conv_lambada(path):
    return [{"text": r["text"]} for r in jsonl(path)], {}


def _wt_is_heading(line: str) -> bool:
    s = line.strip()
    return s.startswith("= ") and s.endswith(" =") and line not in WIKITEXT_NOT_HEADINGS


def _wt_is_top(line: str) -> bool:
    r = line.replace("= = =", "===").replace("= =", "==").strip()
    return r.startswith("= ") and r.endswith(" =")


def wikitext_rebuild_raw(path) -> str:
    """The Salesforce wiki.test.raw (LF, blank lines " ") rebuilt from the HF rows."""
    raw = Path(path).read_bytes().decode("utf-8")
    rows = raw.split("\r\n")
    assert rows[-1] == ""
    out, first = [" "], True
    for line in rows[:-1]:
        assert line.strip(), "blank rows are not expected"
        if _wt_is_heading(line):
            if _wt_is_top(line) and not first and line not in WIKITEXT_ONE_BLANK_BEFORE:
                out.append(" ")
            if not first:
                out.append(" ")
            out += [line, " "]
            first = False
        else:
            out.append(line)
    out += [" ", ""]
    # the first heading gets the file's leading blank line, not a second one
    return "\n".join(out)


def wikitext_pages(raw_lf: str):
    """EleutherAI/wikitext_document_level's _generate_examples, rewritten."""
    pages, ret = [], []
    for line in raw_lf.split("\n"):
        if _wt_is_top(line):
            page = "\n".join(ret)
            if page.strip():
                pages.append(page)
            ret = []
        ret.append(line)
    pages.append("\n".join(ret))
    return pages


def conv_wikitext(path):
    raw = wikitext_rebuild_raw(path)
    n_lines = len(raw.split("\n")) - 1
    return [{"page": p} for p in wikitext_pages(raw)], {"rebuilt_lines": n_lines}


def conv_mmlu_subject(folder: Path, subject: str, split: str):
    docs = []
    with open(folder / split / f"{subject}_{split}.csv", newline="", encoding="utf-8") as f:
        for row in csv.reader(f):
            q, a, b, c, d, ans = row
            docs.append({"question": q, "subject": subject, "choices": [a, b, c, d], "answer": "ABCD".index(ans)})
    return docs


CONVERTERS = {
    "arc_easy": conv_arc, "arc_challenge": conv_arc, "hellaswag": conv_hellaswag, "piqa": conv_piqa,
    "openbookqa": conv_obqa, "winogrande": conv_winogrande, "copa": conv_copa, "wsc273": conv_wsc273,
    "lambada_openai": conv_lambada, "wikitext": conv_wikitext,
}


def write_jsonl(path: Path, docs):
    with open(path, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")


# ----------------------------------------------------------------------------- lm-eval side
def lm_eval_task(task_yaml: Path, split: str, data_files: dict, name: str):
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._yaml_loader import load_yaml

    cfg = load_yaml(task_yaml)
    cfg.pop("tag", None)
    cfg.update({"task": name, "dataset_path": "json", "dataset_name": None,
                "dataset_kwargs": {"data_files": {k: str(v) for k, v in data_files.items()}}})
    for key in ("training_split", "validation_split", "test_split", "fewshot_split"):
        if cfg.get(key) is not None and cfg[key] not in data_files:
            cfg[key] = None
    assert cfg.get("test_split") == split or (cfg.get("test_split") is None and cfg.get("validation_split") == split)
    return ConfigurableTask(config=cfg)


def load_model(name: str, data: Path):
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.integrations.gguf import gguf_tokenizer_mapping

    folder, gguf = MODELS[name](data)
    if name == "stories260K":
        # padding_token_id = 4294967295 in this GGUF: not a vocabulary index (see docstring)
        gguf_tokenizer_mapping._SPECIAL_TOKENS.pop("pad_token", None)
    tok = AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf)
    cfg = AutoConfig.from_pretrained(str(folder), gguf_file=gguf)
    if cfg.pad_token_id is not None and not (0 <= cfg.pad_token_id < cfg.vocab_size):
        cfg.pad_token_id = None
    model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=gguf, config=cfg, dtype=torch.float32)
    model.eval()
    return model, tok, folder / gguf, transformers.__version__


class Recorder:
    """Wraps HFLM._loglikelihood_tokens to keep what lm-eval actually fed."""

    def __init__(self, lm):
        self.lm = lm
        self.pairs = {}      # (context, continuation) -> (context_enc, continuation_enc)
        self.windows = []    # rolling: (context_enc, continuation_enc, (ll, is_greedy)) in call order
        orig = lm._loglikelihood_tokens

        def wrapped(requests, *a, **kw):
            res = orig(requests, *a, **kw)
            for (key, ctx, cont), r in zip(requests, res):
                if key is None:
                    self.windows.append((list(ctx), list(cont), r))
                else:
                    self.pairs[tuple(key)] = (list(ctx), list(cont))
            return res

        lm._loglikelihood_tokens = wrapped


def request_record(lm, rec, context, continuation, ll, greedy):
    ctx_ids, cont_ids = rec.pairs[(context, continuation)]
    out = {"context": context, "continuation": continuation, "context_ids": ctx_ids,
           "continuation_ids": cont_ids, "ll": float(ll), "is_greedy": bool(greedy)}
    if len(ctx_ids) + len(cont_ids) > lm.max_length + 1:
        out["input_ids"] = (ctx_ids + cont_ids)[-(lm.max_length + 1):][:-1]
    return out


def aggregate_of(res: dict) -> dict:
    out = {}
    for k, v in res.items():
        if "," not in k:
            continue
        metric, _flt = k.split(",", 1)
        out[metric] = v if isinstance(v, (int, float)) else str(v)
    return out


def run_task(lm, rec, task, n_docs: int, rolling: bool):
    from lm_eval.evaluator import simple_evaluate

    rec.pairs.clear()
    rec.windows.clear()
    results = simple_evaluate(model=lm, tasks=[task], limit=n_docs, log_samples=True,
                              bootstrap_iters=100000)
    name = task.config.task
    samples = sorted(results["samples"][name], key=lambda s: s["doc_id"])
    assert [s["doc_id"] for s in samples] == list(range(n_docs))
    metric_names = [m["metric"] for m in task.config.metric_list]
    docs = []
    if rolling:
        from lm_eval import utils as lmu
        w = 0
        for s in samples:
            (string,) = s["arguments"][0]
            toks = lm.tok_encode(string)
            n_win = len(list(lmu.get_rolling_token_windows(token_list=toks, prefix_token=lm.prefix_token_id,
                                                           max_seq_len=lm.max_length, context_len=1)))
            wins = rec.windows[w:w + n_win]
            w += n_win
            total = sum(x[2][0] for x in wins)
            ll = float(s["resps"][0][0])
            assert abs(total - ll) <= 1e-9 * max(1.0, abs(ll)), (total, ll)
            m = s["word_perplexity"]
            docs.append({
                "doc_index": s["doc_id"], "target": string, "token_ids": toks,
                "requests": [{"context_ids": c, "continuation_ids": t, "ll": float(r[0]), "is_greedy": bool(r[1])}
                             for c, t, r in wins],
                "metrics": {"loglikelihood": ll, "words": s["word_perplexity"][1],
                            "bytes": s["byte_perplexity"][1]},
            })
            assert m[0] == ll
        assert w == len(rec.windows)
    else:
        for s in samples:
            reqs = [request_record(lm, rec, ctx, cont, r[0][0], r[0][1])
                    for (ctx, cont), r in zip(s["arguments"], s["resps"])]
            metrics = {k: s[k] for k in metric_names if k in s}
            docs.append({"doc_index": s["doc_id"], "requests": reqs, "metrics": metrics})
    return docs, aggregate_of(results["results"][name]), results


def compact_context_ids(docs):
    """Within a document, a request whose context_ids equal the previous request's omits them."""
    for d in docs:
        prev = None
        for r in d.get("requests", []):
            if "context_ids" in r and r["context_ids"] == prev:
                del r["context_ids"]
            elif "context_ids" in r:
                prev = r["context_ids"]


def n_docs_for(task: str, docs) -> int:
    if task in N_DOCS_FIXED:
        return N_DOCS_FIXED[task]
    per_doc = {
        "arc_easy": lambda d: len(d["choices"]["text"]), "arc_challenge": lambda d: len(d["choices"]["text"]),
        "openbookqa": lambda d: len(d["choices"]["text"]), "hellaswag": lambda d: len(d["endings"]),
        "piqa": lambda d: 2, "winogrande": lambda d: 2, "wsc273": lambda d: 2,
    }[task]
    total = 0
    for i, d in enumerate(docs):
        total += per_doc(d)
        if total >= MIN_REQUESTS:
            return i + 1
    return len(docs)


def expected_icl_requests(task: str, row: dict):
    """The (context, continuation) pairs lm-eval must build from a MosaicML ICL row."""
    if task in ("arc_easy", "arc_challenge"):
        return [(row["query"] + "\nAnswer:", " " + c) for c in row["choices"]]
    if task == "openbookqa":
        return [(row["query"], " " + c) for c in row["choices"]]
    if task == "winogrande":
        return [(c, " " + row["continuation"]) for c in row["context_options"]]
    if task == "wsc273":  # lm-eval keeps the space after the pronoun: two spaces
        return [(c, "  " + row["continuation"]) for c in row["context_options"]]
    if task == "copa":  # doc_to_choice already starts with " ", and target_delimiter adds one: two spaces
        stem, conn = row["query"].rsplit(", ", 1)
        return [(stem + " " + conn, "  " + c) for c in row["choices"]]
    raise KeyError(task)


def lm_eval_requests(task_name: str, docs, work: Path):
    """Build lm-eval's requests for every converted doc (no model needed)."""
    import lm_eval

    rel, yaml_rel, split = TASKS[task_name]
    path = work / f"{task_name}_{split}.jsonl"
    write_jsonl(path, docs)
    t = lm_eval_task(Path(lm_eval.__file__).parent / "tasks" / yaml_rel, split, {split: path}, task_name)
    t.build_all_requests(limit=None, rank=0, world_size=1)
    by_doc = {}
    for inst in t.instances:
        by_doc.setdefault(inst.doc_id, []).append((inst.idx, inst.args))
    return [[a for _, a in sorted(by_doc[i])] for i in range(len(by_doc))]


def check_data(data: Path):
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    work = Path(tempfile.mkdtemp(prefix="loopus_lmeval_check_"))
    os.environ.setdefault("HF_DATASETS_CACHE", str(work / "hf_datasets_cache"))
    for task, (rel, _yaml, _split) in TASKS.items():
        docs, stats = CONVERTERS[task](data / rel)
        line = f"{task}: {len(docs)} docs"
        if task == "hellaswag":
            amb = stats["ambiguous_split"]
            line += (f"; activitynet {stats['activitynet']}, wikihow {stats['wikihow']}; ambiguous ctx_a/ctx_b split "
                     f"{len(amb)}: {amb} {[docs[i]['ctx_b'] for i in amb]}; '  '->'   ' in items "
                     f"{stats['double_space_fixed']}")
        if task == "wikitext":
            line += f"; rebuilt raw file lines {stats['rebuilt_lines']}; page 0..2 chars " \
                    f"{[len(d['page']) for d in docs[:3]]}"
        if task in ("arc_easy", "arc_challenge", "openbookqa", "winogrande", "wsc273", "copa"):
            rows = jsonl(data / rel)
            got = lm_eval_requests(task, docs, work)
            bad = [i for i, r in enumerate(rows) if [tuple(x) for x in got[i]] != expected_icl_requests(task, r)]
            line += f"; lm-eval requests differ from the MosaicML strings in {len(bad)} docs {bad[:10]}"
        print(line, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=sorted(MODELS))
    ap.add_argument("--tasks", default=",".join(list(TASKS) + ["wikitext_w256", "mmlu"]))
    ap.add_argument("--out", default=str(REPO / "tests/golden/lmeval"))
    ap.add_argument("--work-dir", default=None)
    ap.add_argument("--check-data", action="store_true", help="convert the data files, print counts, exit")
    args = ap.parse_args()
    data = data_dir()
    if args.check_data:
        check_data(data)
        return
    if not args.model:
        ap.error("--model is required")

    import torch
    torch.set_num_threads(1)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import lm_eval
    import datasets
    from lm_eval.models.huggingface import HFLM
    from lm_eval.api import metrics as lm_metrics

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="loopus_lmeval_"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_DATASETS_CACHE", str(work / "hf_datasets_cache"))
    task_root = Path(lm_eval.__file__).parent / "tasks"

    model, tok, model_file, tf_version = load_model(args.model, data)
    lms = {}

    def get_lm(max_length=None):
        if max_length not in lms:
            lm = HFLM(pretrained=model, tokenizer=tok, batch_size=1, max_length=max_length, device="cpu",
                      dtype="float32")
            lms[max_length] = (lm, Recorder(lm))
        return lms[max_length]

    out_dir = Path(args.out) / args.model
    out_dir.mkdir(parents=True, exist_ok=True)
    for task in args.tasks.split(","):
        lm, rec = get_lm(WIKITEXT_SMALL_WINDOW if task == "wikitext_w256" else None)
        bos = lm.tok_encode("a")
        header = {
            "lm_eval_version": lm_eval.__version__, "transformers_version": tf_version,
            "torch_version": torch.__version__, "datasets_version": datasets.__version__,
            "model": args.model, "model_file": model_file.name, "model_sha256": sha256(model_file),
            "max_length": lm.max_length,
            "add_bos_token": lm.add_bos_token,
            "add_bos": bool(tok.bos_token_id is not None and bos[:1] == [tok.bos_token_id]),
            "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
            "prefix_token_id": lm.prefix_token_id, "batch_size": 1, "dtype": "float32", "device": "cpu",
            "task": task,
        }
        if task == "mmlu":
            folder = REPO / "tests/data/mmlu_small"
            all_docs, sub_aggs, sizes = [], {}, []
            for subj in MMLU_SUBJECTS:
                test_docs = conv_mmlu_subject(folder, subj, "test")
                dev_docs = conv_mmlu_subject(folder, subj, "dev")
                write_jsonl(work / f"mmlu_{subj}_test.jsonl", test_docs)
                write_jsonl(work / f"mmlu_{subj}_dev.jsonl", dev_docs)
                t = lm_eval_task(task_root / f"mmlu/default/mmlu_{subj}.yaml", "test",
                                 {"test": work / f"mmlu_{subj}_test.jsonl", "dev": work / f"mmlu_{subj}_dev.jsonl"},
                                 f"mmlu_{subj}")
                docs, agg, _ = run_task(lm, rec, t, len(test_docs), rolling=False)
                for d in docs:
                    d["subject"] = subj
                all_docs += docs
                sub_aggs[subj] = agg
                sizes.append(len(docs))
            accs = [sub_aggs[s]["acc"] for s in MMLU_SUBJECTS]
            errs = [sub_aggs[s]["acc_stderr"] for s in MMLU_SUBJECTS]
            aggregate = {"acc": float(lm_metrics.aggregate_subtask_metrics(accs, sizes, weight_by_size=True)),
                         "acc_stderr": float(lm_metrics.pooled_sample_stderr(errs, sizes)),
                         "subjects": sub_aggs}
            header.update({"data_file": "tests/data/mmlu_small/test/<subject>_test.csv",
                           "n_docs": len(all_docs), "docs": all_docs, "aggregate": aggregate})
            compact_context_ids(header["docs"])
        else:
            base = "wikitext" if task == "wikitext_w256" else task
            rel, yaml_rel, split = TASKS[base]
            docs_in, _stats = CONVERTERS[base](data / rel)
            path = work / f"{base}_{split}.jsonl"
            write_jsonl(path, docs_in)
            t = lm_eval_task(task_root / yaml_rel, split, {split: path}, task)
            n = n_docs_for(base, docs_in)
            docs, agg, _ = run_task(lm, rec, t, n, rolling=(base == "wikitext"))
            if base != "wikitext":
                compact_context_ids(docs)
            header.update({"data_file": rel, "data_sha256": sha256(data / rel), "n_docs": n,
                           "docs": docs, "aggregate": agg})
        with open(out_dir / f"{task}.json", "w", encoding="utf-8") as f:
            json.dump(header, f, ensure_ascii=False, separators=(",", ":"))
            f.write("\n")
        print(f"{args.model}/{task}: {header['n_docs']} docs, aggregate {header['aggregate']}", flush=True)


if __name__ == "__main__":
    main()

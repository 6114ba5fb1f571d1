#!/usr/bin/env python3
"""Rewrites a src/cuda/*.cu file into C++ for the emulated device (include/emu.hpp): each kernel launch
`name<<<config>>>(args);` becomes `emu::launch(config)([&] { name(args); });` and the dynamic shared
memory declaration a pointer into the emulator's buffer. Usage: rewrite_cu.py IN.cu OUT.cpp"""
# SPDX-License-Identifier: MIT
import re, sys
src = open(sys.argv[1]).read()
src = src.replace('extern __shared__ float4 smem4[];', 'float4* smem4 = emu::dyn_smem<float4>();')
pat = re.compile(r'([\w:]+(?:<[^<>;]*>)?)<<<(.*?)>>>\((.*?)\);', re.S)
src = pat.sub(lambda m: 'emu::launch(%s)([&] { %s(%s); });' % (m.group(2), m.group(1), m.group(3)), src)
src = src.replace('memcpy(&h, &u[i], sizeof h);', 'std::memcpy(&h, &u[i], sizeof h);')
if '<<<' in src or 'extern __shared__' in src:
    sys.exit(sys.argv[1] + ': a launch or shared-memory declaration this rewriter does not know')
open(sys.argv[2], 'w').write(src)

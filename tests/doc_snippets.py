#!/usr/bin/env python3
"""Compile and run the code the documents show: every ```c block marked
"<!-- snippet: NAME" in README.md and docs/API.md is written to NAME.inc
and included by tests/doc_snippets.c, which runs it.
Usage: doc_snippets.py SOURCE_ROOT BUILD_ROOT [CC]"""
import os
import re
import subprocess
import sys
import tempfile

src, build = sys.argv[1], sys.argv[2]
cc = sys.argv[3] if len(sys.argv) > 3 else 'cc'
mark = re.compile(r'<!-- snippet: ([\w-]+).*?-->\s*```c\n(.*?)```', re.S)
with tempfile.TemporaryDirectory() as tmp:
    names = []
    for doc in ('README.md', 'docs/API.md'):
        for m in mark.finditer(open(os.path.join(src, doc)).read()):
            names.append(m.group(1))
            with open(os.path.join(tmp, m.group(1) + '.inc'), 'w') as f:
                # The documents' example directory is a temporary one here.
                f.write(m.group(2).replace('"/data/ctr"', 'DOC_DIR'))
    for want in ('readme-using', 'readme-durable', 'readme-export', 'api-follow', 'api-modes'):
        if want not in names:
            sys.exit('snippet %s not found in the documents' % want)
    exe = os.path.join(tmp, 'doc_snippets')
    cmd = [cc, '-std=c11', '-Wall', '-Wextra', '-Werror', '-Wno-unused-variable',
           '-Wno-unused-but-set-variable', '-I', tmp, '-I', os.path.join(src, 'include'),
           '-I', build, os.path.join(src, 'tests', 'doc_snippets.c'), '-o', exe,
           '-L', build, '-lpskv', '-Wl,-rpath,' + os.path.abspath(build)]
    print(' '.join(cmd))
    subprocess.run(cmd, check=True)
    sys.exit(subprocess.run([exe]).returncode)

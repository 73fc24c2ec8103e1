#!/usr/bin/env python3
"""No dependency circle among the files of lib/: a file calls functions of
another only if that one does not call back, directly or round about.
Calls through the static inlines of the headers count for the file that
uses them. Every file of lib/ includes its own header (when it has one), and every
internal function a file calls is declared in a header it includes
(directly or through those headers); the leaf modules (LEAVES) never
include the core header pskv_internal.h. The same holds for the programs
in the other directories given (tools, fuzzers, benchmarks), and the
tool and the fuzzers never include the core header.
Usage: lib_layering.py LIB_DIR [OTHER_DIR...]. Exit 1 and what is wrong."""
import os
import re
import sys

lib = sys.argv[1]
srcs = {f: open(os.path.join(lib, f)).read() for f in os.listdir(lib) if f.endswith('.c')}
hdrs = {f: open(os.path.join(lib, f)).read() for f in os.listdir(lib) if f.endswith('.h')}
call = re.compile(r'\b(pskv_{1,2}\w+)\(')
define = re.compile(r'^[a-z_][\w \*]*?\b(pskv_{1,2}\w+)\([^;]*$', re.M)
inline = re.compile(r'^static inline [\w \*]*?\b(pskv_{1,2}\w+)\(', re.M)

defined_in = {}
for f, s in srcs.items():
    for name in define.findall(s):
        defined_in.setdefault(name, f)
# What each header inline calls (bodies: from its line to the next line
# that starts with '}').
inline_calls = {}
for s in hdrs.values():
    for m in inline.finditer(s):
        end = s.find('\n}', m.end())
        inline_calls[m.group(1)] = set(call.findall(s[m.end():end]))


def calls_of(s):
    out, todo = set(), set(call.findall(s))
    while todo:
        c = todo.pop()
        if c not in out:
            out.add(c)
            todo |= inline_calls.get(c, set())
    return out


graph = {f: {defined_in[c] for c in calls_of(s) if c in defined_in and defined_in[c] != f}
         for f, s in srcs.items()}

state, stack = {}, []


def visit(f):
    state[f] = 1
    stack.append(f)
    for g in sorted(graph[f]):
        if state.get(g) == 1:
            print('circle: ' + ' -> '.join(stack[stack.index(g):] + [g]))
            sys.exit(1)
        if g not in state:
            visit(g)
    stack.pop()
    state[f] = 2


for f in sorted(graph):
    if f not in state:
        visit(f)

LEAVES = ['array', 'chunk', 'dirlock', 'errors', 'gate', 'handles', 'hash', 'init', 'io',
          'keyfilter', 'keylist', 'keymap', 'optimizer', 'options', 'plan', 'ring', 'seqfile',
          'sort']
include = re.compile(r'^#include "([\w.]+)"', re.M)
declared = re.compile(r'\b(pskv_{1,2}\w+)\)?\(')


def headers_of(text, seen):
    for h in include.findall(text):
        if h not in seen and h in hdrs:
            seen.add(h)
            headers_of(hdrs[h], seen)
    return seen


def undeclared(path, src):
    """Internal functions src calls that no header it includes declares."""
    known = set()
    for h in headers_of(src, set()):
        known |= set(declared.findall(hdrs[h]))
    own = set(define.findall(src)) | set(re.findall(r'^static [\w \*]*?\b(\w+)\(', src, re.M))
    return ['%s calls %s, declared in no header it includes' % (path, c)
            for c in sorted(set(call.findall(src)) - own - known) if c.startswith('pskv__')]


wrong = []
for f, src in sorted(srcs.items()):
    mod = f[:-2]
    seen = headers_of(src, set())
    if mod in LEAVES and 'pskv_internal.h' in seen:
        wrong.append('%s is a leaf module and includes pskv_internal.h' % f)
    if mod + '.h' in hdrs and mod + '.h' not in include.findall(src):
        wrong.append('%s does not include its own header %s.h' % (f, mod))
    wrong += undeclared('lib/' + f, src)
# The programs beside lib/ (tools, fuzzers, benchmarks) likewise call only
# what the headers they include declare; the tool and the fuzzers never
# take the core header.
for d in sys.argv[2:]:
    for f in sorted(os.listdir(d)):
        if not f.endswith(('.c', '.h')):
            continue
        path = os.path.join(d, f)
        src = open(path).read()
        local = ''.join(open(os.path.join(d, h)).read() for h in include.findall(src)
                        if os.path.exists(os.path.join(d, h)))
        wrong += undeclared(path, src + local)
        if os.path.basename(d) in ('tools', 'fuzz') and \
                'pskv_internal.h' in headers_of(src + local, set()):
            wrong.append('%s includes the core header pskv_internal.h' % path)
if wrong:
    print('\n'.join(wrong))
    sys.exit(1)
print('%d files of lib/, no circle; each includes its own header and declares what it calls; '
      '%d leaf modules without the core header' % (len(graph), len(LEAVES)))

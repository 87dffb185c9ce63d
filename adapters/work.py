"""The work an op executes, as the framework's own counter sees it: matmul and convolution
FLOPs of what actually ran, beside the semantic pass count (``passes.py``).

The two differ where a compiler changes the program: XLA removes the conditioner
evaluation TFP repeats for the log-det (so a jitted TFP MAF ``log_prob`` runs one per
layer where the eager code calls two), and a traced loop body appears once in the program
but runs once per trip. Counters:

- torch: ``torch.utils.flop_counter.FlopCounterMode`` around one call (every matmul and
  convolution the dispatcher runs, eager or compiled);
- XLA (jitted JAX, TF with ``jit_compile``): the optimized HLO module. XLA's own
  ``cost_analysis()`` counts a while loop's body once and adds elementwise work, so the
  dots and convolutions are summed here per computation, each called computation
  multiplied by what calls it, and a while body by the trip count XLA proved
  (``known_trip_count``). A loop whose trip count XLA did not prove is counted once and
  named in the note.
- eager TF: every call the counter saw was executed, so the analytic count is the
  executed one.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Work:
    """FLOPs of one call (matmuls and convolutions), the counter that measured them, and
    what the counter could not see (empty when nothing)."""
    flops: float
    counter: str
    note: str = ""


_HEADER = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s+\(.*\)\s+->\s+.*\{\s*$")
_SHAPE = re.compile(r"^[a-z]+\d*\[([^\]]*)\]")
_CALLED = re.compile(r"\b(calls|to_apply|body|condition|true_computation|"
                     r"false_computation)=%?([\w.\-]+)")
_BRANCHES = re.compile(r"branch_computations=\{([^}]*)\}")


def _dims(shape: str) -> tuple[int, ...] | None:
    """(16, 64) for 'f32[16,64]{1,0}'; None for a tuple or a token."""
    m = _SHAPE.match(shape)
    if m is None:
        return None
    body = m.group(1).replace("<=", "")
    return tuple(int(d) for d in body.split(",") if d.strip())


def _split_top(text: str) -> list[str]:
    """Split at commas outside brackets, braces and parentheses."""
    out, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(text[start:i])
            start = i + 1
    out.append(text[start:])
    return [s.strip() for s in out if s.strip()]


def _closing(text: str) -> int:
    """Index of the parenthesis that closes one already open before ``text``."""
    depth = 1
    for i, ch in enumerate(text):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0:
            return i
    return len(text)


def _instruction(line: str):
    """(name, shape text, opcode, operand names, attribute text) of one HLO line, or None."""
    line = line.strip()
    if line.startswith("ROOT "):
        line = line[5:]
    name, sep, rest = line.partition(" = ")
    if not sep:
        return None
    if rest.startswith("("):  # a tuple shape holds spaces: skip to its closing paren
        end = _closing(rest[1:]) + 1
        shape, rest = rest[:end + 1], rest[end + 1:].lstrip()
    else:
        shape, _, rest = rest.partition(" ")
    opcode, paren, rest = rest.partition("(")
    if not paren:
        return None
    end = _closing(rest)
    operands = [op.split()[-1].lstrip("%") for op in _split_top(rest[:end])]
    return name.strip().lstrip("%"), shape, opcode.strip(), operands, rest[end + 1:]


def _own_flops(opcode: str, shape: str, operands: list[str], attrs: str, shapes: dict):
    """FLOPs of one dot or convolution (multiply and add counted apart); 0 otherwise."""
    out = _dims(shape)
    if out is None or opcode not in ("dot", "convolution"):
        return 0.0
    if opcode == "dot":
        lhs = shapes.get(operands[0])
        m = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", attrs)
        if lhs is None or m is None:
            raise ValueError(f"dot without operand shape or contracting dims: {attrs[:80]}")
        k = math.prod(lhs[int(d)] for d in m.group(1).split(",") if d)
        return 2.0 * math.prod(out) * k
    kernel = shapes.get(operands[1])
    m = re.search(r"dim_labels=\w+_(\w+)->", attrs)
    if kernel is None or m is None:
        raise ValueError(f"convolution without kernel shape or dim_labels: {attrs[:80]}")
    per_output = math.prod(kernel) // kernel[m.group(1).index("o")]
    return 2.0 * math.prod(out) * per_output


def hlo_flops(text: str) -> Work:
    """Matmul and convolution FLOPs of one execution of an optimized HLO module (text as
    ``Compiled.as_text()`` or TF's ``optimized_hlo`` prints it)."""
    computations: dict[str, list] = {}
    entry, current = None, None
    for line in text.splitlines():
        header = _HEADER.match(line)
        if header:
            current = computations.setdefault(header.group(2), [])
            if header.group(1):
                entry = header.group(2)
            continue
        if line.strip() == "}":
            current = None
        elif current is not None:
            parsed = _instruction(line)
            if parsed is not None:
                current.append(parsed)
    if entry is None:
        raise ValueError("no ENTRY computation in the HLO text")
    unproved: list[str] = []
    memo: dict[str, float] = {}

    def total(comp: str) -> float:
        if comp in memo:
            return memo[comp]
        memo[comp] = 0.0  # HLO has no recursion; this only guards against bad input
        instructions = computations.get(comp, [])
        shapes = {name: _dims(shape) for name, shape, *_ in instructions}
        flops = 0.0
        for name, shape, opcode, operands, attrs in instructions:
            flops += _own_flops(opcode, shape, operands, attrs, shapes)
            called = dict((kind, target) for kind, target in _CALLED.findall(attrs))
            if opcode == "while":
                trips = _trip_count(attrs)
                if trips is None:
                    unproved.append(name)
                    trips = 1
                flops += trips * (total(called["body"]) + total(called["condition"]))
                continue
            branches = _BRANCHES.search(attrs)
            targets = ([b.strip().lstrip("%") for b in branches.group(1).split(",")]
                       if branches else [called[k] for k in ("true_computation",
                                                             "false_computation")
                                         if k in called])
            if targets:  # one branch runs: the costliest is an upper bound
                flops += max(total(t) for t in targets)
            for kind in ("calls", "to_apply"):
                if kind in called:
                    flops += total(called[kind])
        memo[comp] = flops
        return flops

    flops = total(entry)
    note = (f"while loop(s) {', '.join(sorted(set(unproved)))} without a trip count XLA "
            f"proved: body counted once" if unproved else "")
    return Work(flops, "xla-hlo", note)


def _trip_count(attrs: str) -> int | None:
    m = re.search(r"backend_config=(\{.*\})", attrs)
    if m is None:
        return None
    try:
        config = json.loads(m.group(1))
    except json.JSONDecodeError:
        found = re.search(r'"known_trip_count":\{"n":"(\d+)"\}', attrs)
        return int(found.group(1)) if found else None
    n = config.get("known_trip_count", {}).get("n")
    return int(n) if n is not None else None

"""Hyphens or underscores: every name-valued command-line option accepts both spellings.

Flags use hyphens (``--grad-divisor``) while some names use underscores
(``cross_entropy``, ``leaky_relu``) and others hyphens (``paper-he``, ``fashion-mnist``).
:func:`accept_both_spellings` walks a finished parser, subcommands and plugins included,
and gives every option whose values are names a ``type`` that maps any spelling
(``cross-entropy``, ``CROSS_ENTROPY``, ``paper_he``) to the one the library uses: options
with ``choices`` map to their choices; the options in :data:`NAME_OPTIONS` (free text,
checked later by the library with its own message) map to the library's names, and
``--device`` takes ``array-api-strict:no-float64`` too. Values
that match no known name pass through unchanged, so the usual error names the choices.
Data set names need nothing here: the data layer already takes ``fashion_mnist``.
"""
from __future__ import annotations

import argparse

__all__ = ["accept_both_spellings", "canonical", "device_spelling", "NAME_OPTIONS"]


def _activations():
    from mlp_backend.functional import ACTIVATIONS
    return list(ACTIVATIONS)


def _losses():
    from mlp_backend.functional import LOSSES
    return list(LOSSES)


def _inits():
    from mlp_backend.init import ALIASES, INITIALIZERS
    return [*INITIALIZERS, *ALIASES]


def _optimizers():
    from mlp_backend.optim import OPTIMIZERS
    return list(OPTIMIZERS)


def device_spelling(value: str) -> str:
    """A device string with the array-api-strict parts spelled as the library does:
    ``array-api-strict:no-float64`` -> ``array_api_strict:no_float64``,
    ``strict:cpu_device`` -> ``strict:CPU_DEVICE``; everything else unchanged."""
    if not isinstance(value, str):
        return value
    head, sep, tail = value.strip().partition(":")
    if _key(head) in ("array_api_strict", "strict"):
        head = "array_api_strict" if _key(head) == "array_api_strict" else head
        tail = canonical(tail, ("CPU_DEVICE", "device1", "device2", "no_float64"))
    return head + sep + tail


# option dest -> (the library's names, whether the value is a comma-separated list)
NAME_OPTIONS = {
    "activation": (_activations, False),
    "output": (_activations, False),
    "loss": (_losses, False),
    "init": (_inits, False),
    "inits": (_inits, True),
    "optimizer": (_optimizers, False),
    "tta_optimizer": (_optimizers, False),
}


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def canonical(value: str, names) -> str:
    """``value`` spelled as in ``names`` (hyphens, underscores and case aside), or unchanged."""
    if not isinstance(value, str):
        return value
    return {_key(n): n for n in names}.get(_key(value), value)


def _converter(names_fn, is_list: bool, old_type):
    def convert(value):
        if old_type is not None:
            value = old_type(value)
        names = names_fn()
        if is_list and isinstance(value, str):
            return ",".join(canonical(v, names) for v in value.split(","))
        return canonical(value, names)
    convert.__name__ = getattr(old_type, "__name__", "name")  # argparse's "invalid <type> value"
    return convert


def accept_both_spellings(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Give every name-valued option of ``parser`` and its subparsers a spelling-tolerant
    ``type`` (see the module docstring). Returns ``parser``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                accept_both_spellings(sub)
            continue
        if action.type not in (None, str) and not getattr(action.type, "_spelling", False):
            continue  # numbers, paths with their own parser
        choices = action.choices
        if choices and all(isinstance(c, str) for c in choices):
            names = list(choices)
            action.type = _converter(lambda names=names: names, False, None)
        elif action.dest == "device":
            action.type = lambda value: device_spelling(value)
        elif action.dest in NAME_OPTIONS:
            fn, is_list = NAME_OPTIONS[action.dest]
            action.type = _converter(fn, is_list, None)
        else:
            continue
        action.type._spelling = True
    return parser

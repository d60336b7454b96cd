"""How every checker runs the reader's function and reports: a verdict line, True when all
cases pass. A stub (a function that still raises NotImplementedError) is reported here, in one
place, for every checker: :func:`checker` wraps each ``check_*``."""
from __future__ import annotations

import functools
from typing import Callable, Sequence

import torch


class _Stub(BaseException):
    """Carries a stub's NotImplementedError past a checker's own ``except Exception`` (which
    reports the reader's other bugs case by case) up to :func:`checker`."""


def checker(check: Callable[[Callable], bool]) -> Callable[[Callable], bool]:
    """Decorator of every ``check_*``: the reader's function is called through a guard, and
    if it raises NotImplementedError on any case the verdict is "not implemented yet", not a
    count of wrong cases."""
    name = check.__name__

    @functools.wraps(check)
    def run(fn: Callable) -> bool:
        @functools.wraps(fn)
        def guarded(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except NotImplementedError as e:
                raise _Stub from e

        try:
            return check(guarded)
        except _Stub:
            print(f"{name}: not implemented yet (the function still raises NotImplementedError): "
                  "write its body, then run the check again.")
            return False

    return run


def report(name: str, failures: list[str], n_cases: int) -> bool:
    """Print the verdict of a checker; the first failure is shown in full."""
    if failures:
        print(f"{name}: {len(failures)} of {n_cases} cases wrong. First: {failures[0]}")
        return False
    print(f"{name}: all {n_cases} cases pass.")
    return True


def check_cases(name: str, fn: Callable, cases: Sequence[tuple], reference: Callable,
                mismatch: Callable[..., str | None], shape_hint: str = "") -> bool:
    """Run ``fn`` on every case and compare it with ``reference``.

    Args:
        name: the checker's name, first word of the verdict.
        fn: the reader's function.
        cases: (description, *arguments) tuples; ``fn`` gets clones of tensor arguments, so
            an in-place bug cannot change the case.
        reference: reference(*arguments) -> the expected Tensor.
        mismatch: mismatch(got, expected, *arguments) -> None when ``got`` is right, else a
            sentence saying what is wrong (shapes are already equal when it is called).
        shape_hint: added to the message when the shape is wrong (e.g. the formula of a size).
    """
    failures = []
    for description, *args in cases:
        expected = reference(*args)
        try:
            got = torch.as_tensor(fn(*(a.clone() if isinstance(a, torch.Tensor) else a for a in args)))
        except Exception as e:  # the reader's bug, shown rather than raised
            failures.append(f"{description}: raised {type(e).__name__}: {e}")
            continue
        if got.shape != expected.shape:
            values = (f": expected {expected.tolist()}, got {got.tolist()}"
                      if expected.numel() <= 20 and got.numel() <= 20 else "")
            failures.append(f"{description}: expected a result of shape {tuple(expected.shape)}{shape_hint}, "
                            f"got {tuple(got.shape)}{values}")
            continue
        problem = mismatch(got, expected, *args)
        if problem:
            failures.append(f"{description}: {problem}")
    return report(name, failures, len(cases))

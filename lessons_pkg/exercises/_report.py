"""How every checker reports: a verdict line, True when all cases pass."""


def report(name: str, failures: list[str], n_cases: int) -> bool:
    """Print the verdict of a checker; the first failure is shown in full."""
    if failures:
        print(f"{name}: {len(failures)} of {n_cases} cases wrong. First: {failures[0]}")
        return False
    print(f"{name}: all {n_cases} cases pass.")
    return True

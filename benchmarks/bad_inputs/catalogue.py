"""Every case, checked for consistency: unique ids, a known category and owner, and names for every
case that may end in a refusal (a refusal is clear only if it names the key or file)."""

from __future__ import annotations

from benchmarks.bad_inputs import (
    cases_cli,
    cases_inputs,
    cases_lineage,
    cases_ownership,
    cases_params,
    cases_values,
)
from benchmarks.bad_inputs.spec import CATEGORIES, EITHER, LINE, OWNERS, RESULT, Case


def all_cases() -> list[Case]:
    cases = [
        *cases_lineage.CASES,
        *cases_params.CASES,
        *cases_values.CASES,
        *cases_ownership.CASES,
        *cases_inputs.CASES,
        *cases_cli.CASES,
    ]
    seen: set[str] = set()
    for case in cases:
        if case.id in seen:
            raise ValueError(f"two cases are named {case.id}")
        seen.add(case.id)
        if (
            case.category not in CATEGORIES
            or case.owner not in OWNERS
            or case.expect not in (LINE, RESULT, EITHER)
        ):
            raise ValueError(f"{case.id}: unknown category, owner or expectation")
        if case.expect != RESULT and not case.names:
            raise ValueError(f"{case.id}: a case that may be refused must say what the message names")
    return cases


def select(
    cases: list[Case],
    only: list[str] | None = None,
    categories: list[str] | None = None,
    owners: list[str] | None = None,
) -> list[Case]:
    """Cases whose id contains one of ``only``, in one of ``categories``, waiting on one of ``owners``."""
    return [
        c
        for c in cases
        if (not only or any(o in c.id for o in only))
        and (not categories or c.category in categories)
        and (not owners or c.owner in owners)
    ]

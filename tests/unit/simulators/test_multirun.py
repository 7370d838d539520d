"""Many runs at once: the --seeds argument, the statistics over seeds, and the document of several seeds."""

from __future__ import annotations

import statistics
from typing import Any

import pytest

from simulators.multirun import (
    SeedsError,
    aggregate_runs,
    broken_runs,
    compare_runs,
    many_summary,
    parse_seeds,
    seed_statistics,
    spread,
)


@pytest.mark.parametrize(
    ("text", "seeds"),
    [
        ("7", [7]),
        ("1-5", [1, 2, 3, 4, 5]),
        ("0-0", [0]),
        ("1-3,9", [1, 2, 3, 9]),
        (" 4 , 2-3 ", [4, 2, 3]),
        ("1-3,2-4", [1, 2, 3, 4]),  # each seed once, in the order given
    ],
)
def test_seeds_are_numbers_ranges_and_lists(text: str, seeds: list[int]) -> None:
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "give a seed"),
        ("5-1", "ends before it starts"),
        ("1-", "not a seed or a range"),
        ("a-b", "not a seed or a range"),
        ("-3", "not a seed or a range"),
        ("1.5", "not a seed or a range"),
        ("1,,2", "empty item"),
        ("1-2-3", "not a seed or a range"),
        ("0-10000", "more than 10,000 seeds"),
    ],
)
def test_a_bad_seeds_argument_says_why_in_plain_words(text: str, words: str) -> None:
    with pytest.raises(SeedsError) as caught:
        parse_seeds(text)
    assert words in str(caught.value)
    assert str(caught.value).startswith("--seeds")


def test_spread_is_the_mean_sample_deviation_and_range() -> None:
    assert spread([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]) == {
        "n": 8,
        "mean": 5.0,
        "sd": round(statistics.stdev([2, 4, 4, 4, 5, 5, 7, 9]), 4),  # 2.1381, the sample deviation
        "min": 2.0,
        "max": 9.0,
    }
    assert spread([3.0]) == {"n": 1, "mean": 3.0, "sd": 0.0, "min": 3.0, "max": 3.0}


def _table(values: dict[tuple[str, str], list[float | None]]) -> list[dict[str, Any]]:
    """A per-seed table whose runs (label, view) have the given `lost_units` on each seed."""
    seeds = len(next(iter(values.values())))
    return [
        {
            "seed": seed + 1,
            "events": {},
            "runs": [
                {
                    "label": label,
                    "view": view,
                    "kpis": {"lost_units": series[seed], "stock_end_by_type": {"dc": 1}},
                    "conservation_holds": True,
                }
                for (label, view), series in values.items()
            ],
        }
        for seed in range(seeds)
    ]


def test_aggregate_and_comparison_of_known_values() -> None:
    table = _table(
        {
            ("A", "realtime"): [10, 12, 14, 16],  # mean 13, sd 2.582
            ("B", "realtime"): [20, 22, 24, 26],  # mean 23: 10 higher, far above the spread
            ("C", "realtime"): [11, 13, 15, 15],  # mean 13.5: within the spread
            ("D", "realtime"): [10, 12, 14, 16],  # the same as A on every seed
        }
    )
    aggregate = aggregate_runs(table)
    assert [run["label"] for run in aggregate] == ["A", "B", "C", "D"]
    assert aggregate[0]["kpis"] == {
        "lost_units": {"n": 4, "mean": 13.0, "sd": 2.582, "min": 10.0, "max": 16.0}
    }  # a mapping such as stock_end_by_type is not a KPI to average
    comparisons = {c["label"]: c["kpis"]["lost_units"] for c in compare_runs(table, aggregate)}
    assert comparisons["B"] == {
        "difference": 10.0,
        "spread": 2.582,
        "verdict": "larger than noise",
        "seeds_higher": 4,
        "seeds_lower": 0,
        "seeds_same": 0,
    }
    assert comparisons["C"]["difference"] == 0.5
    assert comparisons["C"]["verdict"] == "within noise"
    assert (comparisons["C"]["seeds_higher"], comparisons["C"]["seeds_lower"]) == (3, 1)
    assert comparisons["D"]["verdict"] == "same"


def test_a_difference_without_any_noise_is_larger_than_the_noise() -> None:
    table = _table({("A", "realtime"): [5, 5, 5], ("B", "realtime"): [6, 6, 6]})
    (comparison,) = compare_runs(table, aggregate_runs(table))
    assert comparison["kpis"]["lost_units"]["verdict"] == "larger than noise"
    assert comparison["kpis"]["lost_units"]["spread"] == 0.0


def test_versions_are_compared_on_the_same_stock_view_and_missing_values_are_left_out() -> None:
    table = _table(
        {
            ("A", "fragmented"): [1, 2, 3],
            ("A", "realtime"): [1, 1, 1],
            ("B", "fragmented"): [4, None, 6],
            ("B", "realtime"): [1, 1, 2],
        }
    )
    aggregate = aggregate_runs(table)
    assert aggregate[2]["kpis"]["lost_units"]["n"] == 2  # the seed without a value does not count
    comparisons = compare_runs(table, aggregate)
    assert [(c["label"], c["view"], c["against"]) for c in comparisons] == [
        ("B", "fragmented", "A"),
        ("B", "realtime", "A"),
    ]
    assert comparisons[0]["kpis"]["lost_units"]["difference"] == 3.0  # 5 - 2
    assert comparisons[0]["kpis"]["lost_units"]["seeds_higher"] == 2
    assert comparisons[1]["kpis"]["lost_units"]["difference"] == round(4 / 3 - 1, 4)


def _run(label: str, lost: int, holds: bool = True) -> dict[str, Any]:
    return {
        "label": label,
        "view": "realtime",
        "kpis": {"lost_units": lost, "fill_rate": 0.9, "orders": 10},
        "conservation": {"holds": holds},
    }


def test_the_summary_says_whether_each_difference_is_larger_than_the_noise() -> None:
    per_seed = [
        (1, {"orders": 10}, [_run("A", 10), _run("B", 30)]),
        (2, {"orders": 10}, [_run("A", 12), _run("B", 31)]),
        (3, {"orders": 10}, [_run("A", 11), _run("B", 11, holds=False)]),
    ]
    document = seed_statistics(per_seed)
    assert document["seeds"] == [1, 2, 3]
    text = many_summary(document)
    assert "3 seeds (1-3)" in text
    assert "B / realtime against A / realtime" in text
    assert "larger than noise" in text or "within noise" in text
    assert "fill rate" in text and "same  on every seed" in text
    assert broken_runs(document) == ["seed 3: B / realtime"]

"""Unit: exact checks of an answer's final answer against a checkable reference (arena/answer_check.py): numbers
written every way people and models write them, where the final answer is read, and what is left to a grader."""
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arena.grading.answer_check import check, chinese_number, conclusion, final_span, numbers

_CN = "零一二三四五六七八九"


def to_chinese(n: int) -> str:
    """An independent writer of Chinese numerals (below 10^12), as a test oracle: 205 -> 二百零五, 10 -> 十."""
    def below_10000(value: int) -> str:
        out, zero = "", False
        for unit, name in ((1000, "千"), (100, "百"), (10, "十"), (1, "")):
            digit = value // unit % 10
            if digit:
                out += ("零" if zero and out else "") + _CN[digit] + name
                zero = False
            else:
                zero = True
        return out
    if n == 0:
        return "零"
    parts = [(n // 100_000_000, "亿"), (n // 10_000 % 10_000, "万"), (n % 10_000, "")]
    out, gap = "", False
    for value, name in parts:
        if value:
            out += ("零" if gap and out else "") + below_10000(value) + name
            gap = value < 1000
        elif out:
            gap = True
    return out[1:] if out.startswith("一十") else out


@settings(max_examples=2000, deadline=None)
@given(st.integers(0, 10**11))
def test_chinese_numerals_read_back_as_written(n):
    assert chinese_number(to_chinese(n)) == n, to_chinese(n)


@settings(max_examples=1000, deadline=None)
@given(st.integers(-10**9, 10**9), st.sampled_from(["plain", "thousands", "fullwidth", "currency", "unit", "cn"]))
def test_numbers_written_every_way_read_back(n, style):
    written = {"plain": str(n), "thousands": f"{n:,}", "fullwidth": str(n).translate(str.maketrans("0123456789-",
                                                                                                     "０１２３４５６７８９－")),
               "currency": f"${n:,}", "unit": f"{n} 元", "cn": to_chinese(abs(n)) if n >= 0 else str(n)}[style]
    found = numbers(f"结果是 {written}。")
    assert found and found[-1].value == n, (written, found)


@pytest.mark.parametrize("text, value", [
    ("1.5万", 15000), ("3亿", 300_000_000), ("百分之二十", 20), ("四分之三", Fraction(3, 4)), ("3/4", Fraction(3, 4)),
    ("\\frac{3}{4}", Fraction(3, 4)), ("\\dfrac{7}{2}", Fraction(7, 2)), ("0.25", Fraction(1, 4)), ("两百", 200),
    ("一千零五", 1005), ("三点一四", Fraction(314, 100)), ("1，234", 1234),
])
def test_special_forms(text, value):
    assert numbers(text)[-1].value == value


@pytest.mark.parametrize("answer, reference, passed, found", [
    ("3 × 6 = 18, and the answer is 18.", "18", True, "18"),
    ("Let me think. 5 + 13 = 18. So there are 30 sheep... \\boxed{30}", "18", False, "30"),  # fluent, wrong
    ("小明有5个苹果，又买了13个，所以一共有18个。", "18", True, "18"),
    ("答案：18", "小明一共有 18 个苹果。", True, "18"),
    ("He pays $1,234.50 in total.", "1234.5", True, "1,234.50"),
    ("The probability is 20%.", "0.2", True, "20%"),
    ("共有二十三只。", "23", True, "二十三"),
    ("The answer is 18 apples (3 × 6).", "18", True, "18"),
    ("First 18, then we subtract 5 to get 13.", "18", False, "13"),  # the last number is the final one
    ("I am not sure.", "18", False, None),
    ("The correct option is (C).", "C", True, "C"),
    ("答案是 B", "B", True, "B"),
    ("Yes, it can.", "Yes", True, "yes"),
    ("不是。因为……", "是", False, "no"),
    ("No.", "No", True, "no"),
])
def test_the_final_answer_decides(answer, reference, passed, found):
    result = check(answer, reference)
    assert result is not None and result.passed is passed and result.found == found, result


@pytest.mark.parametrize("reference", [
    "白白喜欢明明。", "鸡23只，兔12只。", "Because the sentence is ambiguous: both readings are possible.",
    "def add(a, b):\n    return a + b",
])
def test_open_references_are_left_to_a_grader(reference):
    assert conclusion(reference) is None and check("anything 42", reference) is None


def test_the_final_span_is_read_in_order_boxed_announced_last():
    assert final_span("x = 3 \\boxed{\\frac{1}{2}} then 7").how == "boxed"
    assert final_span("We get 4. The answer is 5.").text.startswith("5")
    assert final_span("4 and 5").how == "last"


def test_the_check_agrees_with_a_persons_reading_of_120_answers_it_was_not_written_for():
    """bench/numeric: 60 word problems written after the checker was committed, answered by the default pair
    (Qwen2.5-Coder-0.5B and SmolLM2-135M), each answer labelled by reading it to its end. The check must agree
    with every label, so the pass rate per model and language is the labels' (BENCHMARKS.md §15)."""
    import json
    from pathlib import Path

    from arena.grading.answer_check import check

    lines = (Path(__file__).resolve().parents[2] / "bench" / "numeric" / "answers.jsonl").read_text(
        encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    assert len(rows) == 120 and sum(r["correct"] for r in rows) == 42
    wrong = [(r["model"], r["question_id"], check(r["answer"], r["reference"]).describe())
             for r in rows if check(r["answer"], r["reference"]).passed != r["correct"]]
    assert wrong == []


def test_a_temperature_unit_is_not_a_choice():
    """NFKC turns ℃ into °C; the C of a unit is not the answer's choice (found on bench/heldout: four answers of
    'A. 90℃' or 'B. 95℃' passed against the reference C before this)."""
    for answer, found in (("A. 90℃", "A"), ("B. 95℃。", "B"), ("C. 100℃", "C"), ("答案是 C（100°C）", "C")):
        result = check(answer, "C")
        assert result.found == found and result.passed == (found == "C"), (answer, result)

"""Checking an answer's final answer against a reference that can be checked exactly: no model needed.

When a reference's conclusion is a number, a choice letter or yes/no, an answer is right exactly when its
*final* answer is that conclusion, however fluent its reasoning. This is how lm-evaluation-harness's GSM8K
filters, OpenCompass's math evaluators and inspect's ``match(numeric=True)`` grade such sets, and it is what a
small model grader gets wrong most (BENCHMARKS.md §15: on 60 public word problems the 1.5B grader passed 43
answers whose final number was right in 12).

- **The final answer** comes from, in order: the last ``\\boxed{…}``; the last "the answer is …", "answer: …",
  "答案是/答案为/答案：…", "所以/因此/故 …", "= …" at the end of the text; otherwise the last number (or
  choice, or yes/no) in the text.
- **Numbers are normalised**: full-width digits, thousands separators (1,234 and 1 234), decimals, fractions
  (3/4, \\frac{3}{4}), percents, currency and units around them, a leading minus, and Chinese numerals
  (二十三, 两百零五, 一千二百, 1.5万, 3亿, 百分之二十, 四分之三). Two numbers match when they are equal within a
  relative 1e-6 (a percent also matches its fraction: 20% and 0.2).
- **Choices** (A–E) and **yes/no** (是/否, 对/错, 正确/错误, yes/no, true/false) are compared as words.

``check(answer, reference)`` returns None when the reference is none of these (an open answer): then a model
grader, or nothing, decides.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from fractions import Fraction

# -- numbers ------------------------------------------------------------------------------------------------
_DIGITS = {"零": 0, "〇": 0, "一": 1, "壹": 1, "二": 2, "贰": 2, "两": 2, "三": 3, "叁": 3, "四": 4, "肆": 4,
           "五": 5, "伍": 5, "六": 6, "陆": 6, "七": 7, "柒": 7, "八": 8, "捌": 8, "九": 9, "玖": 9}
_SMALL_UNITS = {"十": 10, "拾": 10, "百": 100, "佰": 100, "千": 1000, "仟": 1000}
_BIG_UNITS = {"万": 10_000, "萬": 10_000, "亿": 100_000_000, "億": 100_000_000}
_CN_CHARS = "".join([*_DIGITS, *_SMALL_UNITS, *_BIG_UNITS, "点", "點"])
# A number as written: Arabic (with separators, decimals, a fraction) and an optional 万/亿 multiplier, or
# Chinese numerals. Bounded quantifiers only: the text is a model's answer.
_ARABIC = r"-?\d{1,3}(?:[,，]\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?(?:\s*/\s*\d+)?"
_NUMBER = re.compile(
    rf"(?:百分之(?P<pct_cn>[{_CN_CHARS}\d.]{{1,20}}))"
    rf"|(?:(?P<den_cn>[{_CN_CHARS}]{{1,10}})分之(?P<num_cn>[{_CN_CHARS}]{{1,10}}))"
    rf"|(?P<frac>\\d?frac\{{(?P<fn>-?\d+(?:\.\d+)?)\}}\{{(?P<fd>\d+(?:\.\d+)?)\}})"
    rf"|(?P<arabic>{_ARABIC})\s*(?P<mult>[万萬亿億])?\s*(?P<pct>%|％|percent)?"
    rf"|(?P<cn>[{_CN_CHARS}]{{1,20}})")


def chinese_number(text: str) -> Fraction | None:
    """二十三 -> 23, 两百零五 -> 205, 一千二百 -> 1200, 三点五 -> 3.5, 十 -> 10; None if it is not a number."""
    if not text or any(c not in _CN_CHARS for c in text):
        return None
    if "点" in text or "點" in text:
        whole, _, frac = text.replace("點", "点").partition("点")
        head = chinese_number(whole) if whole else Fraction(0)
        if head is None or not frac or any(c not in _DIGITS for c in frac):
            return None
        return head + Fraction("0." + "".join(str(_DIGITS[c]) for c in frac))
    total, wan, section, digit = Fraction(0), 0, 0, None  # 亿 and above, the 万 group, below 万, the last digit
    for char in text:
        if char in _DIGITS:
            if digit is not None and digit != 0 and _DIGITS[char] != 0:  # 二三: a digit string, not a count
                return None
            digit = _DIGITS[char]
        elif char in _SMALL_UNITS:
            section += (1 if digit is None else digit) * _SMALL_UNITS[char]
            digit = None
        elif _BIG_UNITS[char] == 10_000:
            wan = (section + (digit or 0)) * 10_000
            section, digit = 0, None
        else:  # 亿
            total = (total + wan + section + (digit or 0)) * 100_000_000
            wan, section, digit = 0, 0, None
    value = total + wan + section + (digit or 0)
    return value if text not in ("零", "〇") or value == 0 else None


def _arabic(text: str) -> Fraction:
    text = re.sub(r"[,，\s]", "", text)
    if "/" in text:
        numerator, denominator = text.split("/")
        return Fraction(numerator) / Fraction(denominator) if Fraction(denominator) else Fraction(numerator)
    return Fraction(text)


@dataclass(frozen=True)
class Number:
    value: Fraction
    percent: bool = False
    text: str = ""

    def matches(self, other: "Number") -> bool:
        """Equal within a relative 1e-6; a percent also matches its fraction (20% and 0.2)."""
        candidates = {self.value}
        if self.percent or other.percent:
            candidates |= {self.value / 100 if self.percent else self.value * 100}
        return any(_close(v, other.value) for v in candidates)


def _close(a: Fraction, b: Fraction) -> bool:
    return abs(a - b) <= Fraction(1, 10**6) * max(Fraction(1), abs(a), abs(b))


# A lone Chinese numeral is a number only where a count is: before a measure word or a unit, or ending a clause
# (一共, 一些, 统一, 第一 and 十分 are words, not numbers).
_MEASURES = set("个只人条本张元块天年月日号次件位头匹辆台岁米斤克吨秒分钟时倍种道名支枚颗朵杯瓶里页周度题")
_CLAUSE_END = set("。，,.;；!！?？、）)」』 \n") | {""}


def _counts(match: re.Match, text: str) -> bool:
    word = match.group("cn")
    if word is None or len(word) > 1:
        return True
    before, after = text[match.start() - 1:match.start()], text[match.end():match.end() + 1]
    if before in ("第", "统", "唯", "万", "之") or (word == "十" and after == "分"):
        return False
    return after in _MEASURES or after in _CLAUSE_END


def numbers(text: str) -> list[Number]:
    """Every number in ``text``, in order, normalised."""
    text = unicodedata.normalize("NFKC", text)
    found = []
    for match in _NUMBER.finditer(text):
        value = _value(match)
        if value is not None and _counts(match, text):
            found.append(Number(value[0], value[1], match.group(0).strip()))
    return found


def _value(match: re.Match) -> tuple[Fraction, bool] | None:
    try:
        if match.group("pct_cn"):
            inner = match.group("pct_cn")
            value = chinese_number(inner) if not re.fullmatch(r"[\d.]+", inner) else Fraction(inner)
            return (value, True) if value is not None else None
        if match.group("den_cn"):
            num, den = chinese_number(match.group("num_cn")), chinese_number(match.group("den_cn"))
            return (num / den, False) if num is not None and den else None
        if match.group("frac"):
            den = Fraction(match.group("fd"))
            return (Fraction(match.group("fn")) / den, False) if den else None
        if match.group("arabic"):
            value = _arabic(match.group("arabic"))
            if match.group("mult"):
                value *= _BIG_UNITS[match.group("mult")]
            return value, bool(match.group("pct"))
        value = chinese_number(match.group("cn"))
        return (value, False) if value is not None else None
    except (ValueError, ZeroDivisionError):
        return None


# -- final answers ------------------------------------------------------------------------------------------
# A letter after "°" is a unit, not a choice: NFKC turns ℃ into °C ("A. 90℃" answers A, not C; found on
# bench/heldout, BENCHMARKS.md §17).
_CHOICE = re.compile(r"(?<![A-Za-z°])\(?([A-E])\)?(?![A-Za-z])")
_YES = ("yes", "true", "是", "对", "正确", "能", "会", "可以")
_NO = ("no", "false", "否", "不是", "不对", "错", "错误", "不能", "不会", "不可以")
# Phrases that announce the final answer; the text after the last one is where it is.
_ANNOUNCE = re.compile(
    r"(?:the\s+(?:final\s+)?answer\s+is|final\s+answer\s*[:：]|answer\s*[:：]|therefore|thus|so\s+the|hence"
    r"|最终答案(?:是|为|：|:)|答案(?:是|为|：|:|应该是|应为)|所以|因此|故|即|综上)", re.IGNORECASE)


def boxed(text: str) -> str | None:
    """The content of the last \\boxed{…} (braces balanced), or None."""
    at = text.rfind("\\boxed")
    if at < 0:
        return None
    start = text.find("{", at)
    if start < 0:
        return None
    depth = 0
    for end in range(start, min(len(text), start + 2000)):
        depth += {"{": 1, "}": -1}.get(text[end], 0)
        if depth == 0:
            return text[start + 1:end]
    return None


@dataclass(frozen=True)
class Final:
    """Where an answer's final answer was read, and the text it was read from."""

    how: str    # 'boxed', 'announced' (after "the answer is", "答案是", …) or 'last' (the last one in the text)
    text: str


def final_span(text: str) -> Final:
    """The part of ``text`` that holds its final answer (see the module's docstring)."""
    text = unicodedata.normalize("NFKC", text or "")
    if (inside := boxed(text)) is not None:
        return Final("boxed", inside)
    announced = list(_ANNOUNCE.finditer(text))
    if announced:
        tail = text[announced[-1].end():].strip()
        sentence = re.split(r"(?<=[.。!！?？;；])\s|\n", tail, maxsplit=1)[0]
        if sentence:
            return Final("announced", sentence[:300])
    return Final("last", text)


# -- the check ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Check:
    """An exact check's verdict, with what it read: the rule that applied and the final answers compared."""

    passed: bool
    rule: str          # 'number', 'choice' or 'yes/no'
    expected: str      # the reference's conclusion, as read
    found: str | None  # the answer's final answer, as read (None: it gave none)
    how: str           # where the answer's final answer was read ('boxed', 'announced', 'last')

    def describe(self) -> str:
        return (f"{self.rule}: expected {self.expected}, found {self.found if self.found is not None else 'none'}"
                f" ({self.how})")


def conclusion(reference: str) -> tuple[str, object] | None:
    """The reference's conclusion if an exact rule can check it: ('number', Number), ('choice', 'B') or
    ('yes/no', True/False); None for an open answer. A reference qualifies when its final span is short (a
    conclusion, not an essay) and holds exactly one number, one choice letter or one yes/no word."""
    span = final_span(reference)
    text = span.text.strip() if span.how != "last" else reference.strip()
    if len(text) > 120:
        return None
    found = numbers(text)
    if len(found) == 1 or (found and span.how == "boxed"):
        return "number", found[-1]
    word = _yes_no(text, strict=True)
    if word is not None:
        return "yes/no", word
    letters = {m.group(1) for m in _CHOICE.finditer(text)}
    if len(letters) == 1 and len(re.sub(r"[\W_]", "", text)) <= 12:
        return "choice", letters.pop()
    return None


def _yes_no(text: str, strict: bool = False) -> bool | None:
    """True for yes, False for no, None if it says neither (``strict``: the text must be little more than it)."""
    words = re.sub(r"[\W_]+", " ", text.lower()).strip()
    if strict and len(words.replace(" ", "")) > 8:
        return None
    for word in sorted((*_YES, *_NO), key=len, reverse=True):  # 不是 before 是
        if words.startswith(word) or (not strict and word in words.split()):
            return word in _YES
    return None


def check(answer: str, reference: str) -> Check | None:
    """``answer``'s final answer against ``reference``'s conclusion, or None when no exact rule applies."""
    wanted = conclusion(reference)
    if wanted is None:
        return None
    rule, expected = wanted
    span = final_span(answer)
    if rule == "number":
        found = numbers(span.text)
        last = found[-1] if found else None
        passed = last is not None and last.matches(expected)
        if not passed and span.how == "announced" and found:  # "the answer is 18 apples (3 × 6)": the first one
            passed, last = found[0].matches(expected), found[0]
        return Check(passed, rule, expected.text, last.text if last else None, span.how)
    if rule == "choice":
        letters = [m.group(1) for m in _CHOICE.finditer(span.text)]
        found = letters[-1] if span.how == "last" and letters else letters[0] if letters else None
        return Check(found == expected, rule, expected, found, span.how)
    said = _yes_no(span.text if span.how != "last" else answer.strip()[:40])
    return Check(said == expected, rule, "yes" if expected else "no",
                 None if said is None else "yes" if said else "no", span.how)

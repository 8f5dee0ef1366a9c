"""Unit: fitting a conversation into a context window (arena/engines/context.py)."""
import pytest

from arena.serving.engines.context import ContextOverflow, approximate_count, fit_context

COUNT = approximate_count(lambda text: len(text.split()), per_message=1)  # one token per word, one per message


def conversation(turns: int, words: int = 10) -> list[dict]:
    messages = [{"role": "system", "content": "be brief"}]
    for i in range(turns):
        messages += [{"role": "user", "content": f"q{i} " + "w " * words},
                     {"role": "assistant", "content": "a " * words}]
    return messages + [{"role": "user", "content": "last question"}]


def test_a_conversation_that_fits_is_untouched():
    messages = conversation(2)
    fitted = fit_context(messages, COUNT, 1000, 100)
    assert fitted.messages == messages and fitted.dropped_turns == 0 and fitted.max_new_tokens == 100


def test_oldest_turns_go_first_and_the_system_prompt_stays():
    messages = conversation(4)  # 3 + 4 * (12 + 11) + 3 + 1 = 99 tokens
    fitted = fit_context(messages, COUNT, 80, 20)
    assert fitted.messages[0]["content"] == "be brief" and fitted.messages[-1]["content"] == "last question"
    assert fitted.dropped_turns == 2 and COUNT(fitted.messages) + 20 <= 80
    assert fitted.messages[1]["content"].startswith("q2")


def test_the_answer_budget_shrinks_before_a_question_is_refused():
    messages = [{"role": "user", "content": "w " * 50}]  # 52 tokens
    assert fit_context(messages, COUNT, 200, 512).max_new_tokens == 148
    with pytest.raises(ContextOverflow, match="needs 52 tokens, and this model's context holds 100 tokens"):
        fit_context(messages, COUNT, 100, 512)

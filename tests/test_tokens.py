"""The prompt vocabulary's spellings: semantic item ids."""

from unimp_core.tokens import (ADDED_TOKEN_RE, parse_semantic_item, semantic_item, semantic_tokens,
                               semantic_vocabulary)


def test_a_semantic_id_is_a_letter_per_level_and_the_collision_index_last():
    assert semantic_item((12, 7, 201, 0)) == "<a_12><b_7><c_201><d_0>"
    assert semantic_tokens((3, 1)) == ["<a_3>", "<b_1>"]
    assert semantic_vocabulary(2, 3, 2) == [["<a_0>", "<a_1>", "<a_2>"], ["<b_0>", "<b_1>", "<b_2>"], ["<c_0>", "<c_1>"]]
    # the tiny tokenizer learns the prompt phrases without the added tokens
    assert ADDED_TOKEN_RE.sub(" ", "next <answer> <a_12><b_7><c_2> ok").split() == ["next", "ok"]


def test_generated_text_parses_back_to_one_code_tuple():
    assert parse_semantic_item("<a_12><b_7><c_201><d_0>") == (12, 7, 201, 0)
    assert parse_semantic_item(" <a_12> <b_7> <c_1> ") == (12, 7, 1)  # decoding gives each token its space back
    for text in ("<b_7><a_12>", "<a_1><a_2>", "<a_1> and <b_2>", "item_3", "", "<a_1><c_2>"):
        assert parse_semantic_item(text) is None, text

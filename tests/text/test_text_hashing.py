"""The hashing encoder: tokens, bucket ids, padding, determinism; and the bag it feeds."""

from __future__ import annotations

import zlib

import torch

from ssimctr.models.layers.encoded import HashedBag
from ssimctr.text.hashing import hashed_tokens, tokens


def test_words_are_lower_cased_runs_of_word_characters_then_char_ngrams():
    assert tokens("Red Shoe, red-shoe!", 0) == ["red", "shoe", "red", "shoe"]
    assert tokens("Ab cde", 2) == ["ab", "cde", "ab", "cd", "de"]
    assert tokens("账单缴费 x", 2) == ["账单缴费", "x", "账单", "单缴", "缴费", "x"]  # CJK: a run is one word
    assert tokens("", 3) == [] and tokens("  ,; ", 0) == []


def test_bucket_ids_are_crc32_padded_and_cut_at_max_tokens():
    table = hashed_tokens(["b a", "", "a b c d"], buckets=1000, char_ngrams=0, max_tokens=3)
    a, b, c = (zlib.crc32(w.encode()) % 1000 for w in "abc")
    assert table.tolist() == [[b, a, 1000], [1000, 1000, 1000], [a, b, c]]
    assert torch.equal(table, hashed_tokens(["b a", "", "a b c d"], 1000, 0, 3))  # the same in every process
    assert hashed_tokens([], 10, 0, 5).shape == (0, 1) and hashed_tokens([""], 10, 0, 5).tolist() == [[10]]


def test_the_bag_averages_token_embeddings_and_an_empty_text_is_zero():
    table = torch.tensor([[4, 4], [1, 4], [1, 2]])  # empty, one token, two tokens; 4 = padding
    bag = HashedBag(table, buckets=4, dim=3)
    out = bag(torch.tensor([[0, 1], [2, 2]]))
    weight = bag.bag.weight
    assert out.shape == (2, 2, 3)
    torch.testing.assert_close(out[0, 0], torch.zeros(3))
    torch.testing.assert_close(out[0, 1], weight[1])
    torch.testing.assert_close(out[1, 0], (weight[1] + weight[2]) / 2)
    out.sum().backward()
    assert weight.grad[4].abs().sum() == 0 and weight.grad[1].abs().sum() > 0

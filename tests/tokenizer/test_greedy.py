"""Greedy longest-match encoding (``tokenizer encode --method greedy``)."""

from __future__ import annotations

import pytest

from tokenizer.cli import main
from tokenizer.encoder import Tokenizer
from tokenizer.greedy import GreedyTokenizer
from tokenizer.trainer import train_bpe


def _abc_tokenizer() -> Tokenizer:
    """Merges bc, ab, ab+c: BPE splits "abc" as a|bc (bc merges first and a+bc is no merge),
    longest match takes "abc" whole."""
    vocab = {i: bytes([i]) for i in range(256)}
    merges = [(b"b", b"c"), (b"a", b"b"), (b"ab", b"c")]
    for n, (a, b) in enumerate(merges):
        vocab[256 + n] = a + b
    return Tokenizer(vocab, merges, ["<|endoftext|>"])


def test_longest_match_differs_from_bpe_where_the_merge_order_does() -> None:
    tok = _abc_tokenizer()
    greedy = GreedyTokenizer.from_tokenizer(tok)
    assert [tok.vocab[i] for i in tok.encode("abc")] == [b"a", b"bc"]
    assert [greedy.vocab[i] for i in greedy.encode("abc")] == [b"abc"]
    # specials are split out first and never matched inside ordinary text
    ids = greedy.encode("abcab<|endoftext|>bc")
    assert ids[-2] == tok.special_tokens["<|endoftext|>"]
    assert greedy.decode(ids) == "abcab<|endoftext|>bc"


@pytest.fixture(scope="module")
def trained(wiki, tmp_path_factory) -> tuple[Tokenizer, str]:
    """A 600-token BPE vocabulary trained on held-out Wikipedia, and other text to encode."""
    path = tmp_path_factory.mktemp("greedy") / "train.txt"
    path.write_text(wiki(6), encoding="utf-8")
    vocab, merges = train_bpe([str(path)], 600, ["<|endoftext|>"], progress=False)
    return Tokenizer(vocab, merges, ["<|endoftext|>"]), wiki(9)[-20000:]


def test_every_token_is_the_longest_vocabulary_match(trained, sample) -> None:
    tok, text = trained
    greedy = GreedyTokenizer.from_tokenizer(tok)
    for t in (text, sample("german"), sample("many_scripts")[:3000]):
        ids = greedy.encode(t)
        assert greedy.decode(ids) == t
        assert list(greedy.encode_iterable(iter(t.splitlines(keepends=True)))) == ids
        words = [w.encode("utf-8") for part in t.split("<|endoftext|>")
                 for w in tok._pre.findall(part)]
        # walk each pre-token: no longer vocabulary entry matches where a token starts
        k = 0
        plain = [i for i in ids if i != tok.special_tokens["<|endoftext|>"]]
        for w in words:
            at = 0
            while at < len(w):
                piece = tok.vocab[plain[k]]
                assert w.startswith(piece, at)
                longer = [n for n in range(len(piece) + 1, len(w) - at + 1)
                          if w[at : at + n] in tok.token_to_id]
                assert not longer, (w, piece)
                at += len(piece)
                k += 1
        assert k == len(plain)


def test_cli_encodes_greedily_and_shows_both_splits(trained, tmp_path, capsys) -> None:
    tok, text = trained
    tok.save(tmp_path / "tok")
    (tmp_path / "in.txt").write_text(text[:2000], encoding="utf-8")
    assert main(["encode", "--tokenizer", str(tmp_path / "tok"), "--method", "greedy",
                 "--input", str(tmp_path / "in.txt")]) == 0
    ids = [int(x) for x in capsys.readouterr().out.split()]
    assert ids == GreedyTokenizer.from_tokenizer(tok).encode(text[:2000])
    sentence = "The international committee's representatives"
    assert main(["encode", "--tokenizer", str(tmp_path / "tok"), "--method", "greedy",
                 "--show", sentence]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("greedy") and out[0].endswith("| bpe")
    n_greedy = len(GreedyTokenizer.from_tokenizer(tok).encode(sentence))
    n_bpe = len(tok.encode(sentence))
    assert out[-1].startswith(f"greedy {n_greedy} tokens, bpe {n_bpe} tokens")
    assert len(out) == 2 + max(n_greedy, n_bpe)

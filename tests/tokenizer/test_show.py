"""``tokenizer encode --show TEXT``: the pieces and ids of a text."""

from __future__ import annotations

from tokenizer.cli import main
from tokenizer.encoder import Tokenizer


def _tokenizer(tmp_path) -> str:
    vocab = {i: bytes([i]) for i in range(256)}
    merges = [(b"h", b"e"), (b" ", b"w"), (b"he", b"l"), (b"\xc3", b"\xa9")]
    for n, (a, b) in enumerate(merges):
        vocab[256 + n] = a + b
    Tokenizer(vocab, merges, ["<|endoftext|>"]).save(tmp_path / "tok")
    return str(tmp_path / "tok")


def test_show_prints_each_piece_with_its_id(tmp_path, capsys):
    tok_dir = _tokenizer(tmp_path)
    text = "hel wé\n<|endoftext|>\U0001f600"
    assert main(["encode", "--tokenizer", tok_dir, "--show", text]) == 0
    lines = capsys.readouterr().out.splitlines()
    tok = Tokenizer.load(tok_dir)
    ids = tok.encode(text)
    assert [int(line.split("\t")[0]) for line in lines[:-1]] == ids
    pieces = [line.split("\t")[1] for line in lines[:-1]]
    assert pieces[:4] == ["'hel'", "' w'", "'é'", "'\\n'"]
    assert pieces[4] == "'<|endoftext|>'"
    assert pieces[5:] == [repr(bytes([b])) for b in "\U0001f600".encode()]  # partial UTF-8
    assert lines[-1] == f"{len(ids)} tokens, {len(text.encode())} bytes"

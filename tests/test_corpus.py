import pytest

from interp import InterpError
from interp.corpus import corpus_info, load_texts, mixed_texts, stdlib_dir


def test_texts_are_deterministic_and_sourced():
    a, b = mixed_texts(10, seed=1), mixed_texts(10, seed=1)
    assert a == b and a != mixed_texts(10, seed=2)
    assert [t.domain for t in a] == ["prose", "code"] * 5
    for t in a:
        path, line = t.source.rsplit(":", 1)
        assert (stdlib_dir() / path).exists() and int(line) >= 1
        assert len(t.text) >= 600
    assert corpus_info()["python"].startswith("3.")


def test_domains_look_like_their_names():
    code = load_texts("code", 5)
    assert all(t.text.lstrip().startswith(("def ", "class ", "async def ", "@")) for t in code)
    assert all(" the " in t.text.lower() or " a " in t.text.lower() for t in load_texts("prose", 5))


def test_bad_requests_are_clear_errors():
    with pytest.raises(InterpError, match="domain"):
        load_texts("poetry", 3)
    with pytest.raises(InterpError, match="at least one"):
        load_texts("prose", 0)
    with pytest.raises(InterpError, match="ask for fewer"):
        load_texts("prose", 10, min_chars=10**7)

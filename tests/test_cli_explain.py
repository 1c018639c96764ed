"""`interp lens`, `interp steer-vector` and `interp steer` on a tiny Llama folder: what they print and write,
and the one-line errors bad input gets (`interp patch` is tested in test_attribution.py)."""

import json

from interp.cli import main


def test_lens_prints_a_layer_by_position_table_and_writes_it(tiny_llama_dir, tmp_path, capsys):
    out = tmp_path / "lens.json"
    assert main(["lens", str(tiny_llama_dir), "Mary gave John a", "--token", " book", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert said.startswith("logit lens") and "embed" in said and f"saved to {out}" in said
    d = json.loads(out.read_text())
    assert d["lens"] == "logit" and d["layers"] == ["embed", "0", "1"] and len(d["top_probs"]) == 3
    assert len(d["token_prob"][0]) == len(d["input_tokens"]) and max(d["kl"][-1]) < 1e-4
    assert main(["lens", str(tiny_llama_dir), "Mary gave John a", "--token", " Mary Ann"]) == 2
    assert "not one" in capsys.readouterr().err


def test_steer_vector_then_steer_side_by_side(tiny_llama_dir, tmp_path, capsys):
    pos, neg, vec = tmp_path / "pos.txt", tmp_path / "neg.txt", tmp_path / "v.steer"
    pos.write_text("I loved it\nWonderful film\n")
    neg.write_text("I hated it\nAwful film\n")
    assert main(["steer-vector", str(tiny_llama_dir), "--positive", str(pos), "--negative", str(neg), "--layer", "1",
                 "--out", str(vec)]) == 0
    assert "blocks.1.hook_resid_post" in capsys.readouterr().out and vec.exists()
    assert main(["steer", str(tiny_llama_dir), "The film was", "--vector", str(vec), "--alpha", "50",
                 "--max-new-tokens", "3"]) == 0
    said = capsys.readouterr().out
    assert said.count("unsteered") == 2 and said.count("  steered") == 2 and "greedy" in said and "sampled (seed 0" in said
    assert main(["steer", str(tiny_llama_dir), "The film was", "--vector", str(vec), "--alpha", "1", "--clamp"]) == 2
    assert "--clamp sets an SAE feature" in capsys.readouterr().err
    assert main(["steer", str(tiny_llama_dir), "The film was", "--feature", "nofolder", "--alpha", "1"]) == 2
    assert "SAE_DIR:ID" in capsys.readouterr().err
    (tmp_path / "empty.txt").write_text("\n")
    assert main(["steer-vector", str(tiny_llama_dir), "--positive", str(tmp_path / "empty.txt"), "--negative", str(neg),
                 "--layer", "1", "--out", str(vec)]) == 2
    assert "holds no prompt" in capsys.readouterr().err

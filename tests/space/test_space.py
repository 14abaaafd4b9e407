from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from autotune.errors import SpaceError
from autotune.space.model import load_space, suggest_params

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "search_spaces" / "cpu-fixed-load.yaml"


def _write(tmp_path: Path, data: dict | str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def _base() -> dict:
    return yaml.safe_load(QUICKSTART.read_text())


def _problems(tmp_path: Path, data: dict | str) -> list[tuple[str, str]]:
    path = _write(tmp_path, data)
    with pytest.raises(SpaceError) as info:
        load_space(path)
    assert str(path) in str(info.value)
    assert info.value.exit_code == 2
    return info.value.problems


@pytest.mark.parametrize("path", sorted((ROOT / "search_spaces").glob("*.yaml")))
def test_shipped_spaces_are_valid(path: Path) -> None:
    space = load_space(path)
    assert space.objectives


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    problems = _problems(tmp_path, "model:\n  path: [unclosed\n")
    assert problems[0][0].startswith("line ")
    assert "YAML syntax error" in problems[0][1]


def test_unknown_key_names_field_path(tmp_path: Path) -> None:
    data = _base()
    data["workload"]["load"]["concurency"] = 3
    assert ("workload.load.concurency", "unknown key") in _problems(tmp_path, data)


def test_wrong_type_names_field_path(tmp_path: Path) -> None:
    data = _base()
    data["workload"]["num_requests"] = "many"
    locs = [loc for loc, _ in _problems(tmp_path, data)]
    assert "workload.num_requests" in locs


def test_empty_range(tmp_path: Path) -> None:
    data = _base()
    data["parameters"]["max_num_seqs"] = {"low": 64, "high": 8}
    problems = _problems(tmp_path, data)
    assert any(loc == "parameters.max_num_seqs" and "empty range" in msg for loc, msg in problems)


def test_empty_choices(tmp_path: Path) -> None:
    data = _base()
    data["parameters"]["enable_chunked_prefill"] = {"choices": []}
    problems = _problems(tmp_path, data)
    assert any("choices is empty" in msg for _, msg in problems)


def test_unknown_parameter(tmp_path: Path) -> None:
    data = _base()
    data["parameters"]["max_num_sequences"] = {"choices": [1, 2]}
    problems = _problems(tmp_path, data)
    assert any(
        loc == "parameters.max_num_sequences" and "unknown parameter" in msg
        for loc, msg in problems
    )


def test_unknown_quantization_variant(tmp_path: Path) -> None:
    data = _base()
    data["parameters"]["quantization"]["choices"].append("awq")
    problems = _problems(tmp_path, data)
    assert any(loc == "parameters.quantization.choices" for loc, _ in problems)


def test_draft_length_must_be_conditional(tmp_path: Path) -> None:
    data = _base()
    del data["parameters"]["num_speculative_tokens"]["when"]
    problems = _problems(tmp_path, data)
    assert any(loc == "parameters.num_speculative_tokens.when" for loc, _ in problems)


def test_unknown_objective_metric_and_slo(tmp_path: Path) -> None:
    data = _base()
    data["objectives"][0]["metric"] = "speed"
    data["slos"]["ttft_p42_ms"] = 3
    locs = [loc for loc, _ in _problems(tmp_path, data)]
    assert "objectives[0].metric" in locs
    assert "slos" in locs


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpaceError, match="cannot read file"):
        load_space(tmp_path / "nope.yaml")


class _FixedTrial:
    """Answers suggest_* with the lowest value, recording what was asked."""

    def __init__(self, categorical: dict | None = None) -> None:
        self.asked: list[str] = []
        self.categorical = categorical or {}

    def suggest_categorical(self, name, choices):
        self.asked.append(name)
        return self.categorical.get(name, choices[0])

    def suggest_int(self, name, low, high, step=1, log=False):
        self.asked.append(name)
        return low

    def suggest_float(self, name, low, high, step=None, log=False):
        self.asked.append(name)
        return low


def test_conditional_parameter_sampled_only_when_active() -> None:
    space = load_space(QUICKSTART)
    off = _FixedTrial({"speculative_method": "none"})
    params = suggest_params(space, off)
    assert "num_speculative_tokens" not in params
    on = _FixedTrial({"speculative_method": "ngram"})
    params = suggest_params(space, on)
    assert params["num_speculative_tokens"] == 1
    assert on.asked.index("speculative_method") < on.asked.index("num_speculative_tokens")


def test_default_params_are_inside_the_space() -> None:
    space = load_space(QUICKSTART)
    defaults = space.default_params()
    assert defaults["quantization"] == "none"
    assert defaults["speculative_method"] == "none"
    assert "num_speculative_tokens" not in defaults
    assert defaults["max_num_seqs"] == 128


def test_key_written_twice_is_refused_wherever_it_is(tmp_path: Path) -> None:
    text = QUICKSTART.read_text(encoding="utf-8")
    first = text.splitlines().index("  served_name: demo") + 1
    nested = text.replace("  served_name: demo\n", "  served_name: demo\n  served_name: other\n")
    assert _problems(tmp_path, nested)[0] == (
        f"model.served_name (line {first + 1})",
        f"written twice, on lines {first} and {first + 1}: YAML would silently keep the last; "
        "keep one")
    top = text + "name: again\n"
    assert _problems(tmp_path, top)[0][0].startswith("name (line ")
    flow = text.replace("  max_model_len: 512\n", "  max_model_len: 512\n  x: {a: 1, a: 2}\n")
    after = text.splitlines().index("  max_model_len: 512") + 2
    assert _problems(tmp_path, flow)[0][0] == f"model.x.a (line {after})"


def test_yaml_merge_keys_may_be_overridden(tmp_path: Path) -> None:
    text = QUICKSTART.read_text(encoding="utf-8").replace(
        "  load: {kind: concurrency, concurrency: 32}\n",
        "  load: &load {kind: concurrency, concurrency: 32}\n")
    text += "x-unused: {<<: *load, concurrency: 8}\n"
    locs = [loc for loc, _ in _problems(tmp_path, text)]
    assert locs == ["x-unused"]  # the unknown key only, no "written twice"


def test_not_a_text_file(tmp_path: Path) -> None:
    problems = _problems(tmp_path, "name: demo\nmodel:\x00\n")
    assert problems == [("line 2, column 7", "not a text file: character #x0000 (special "
                         "characters are not allowed); check that --space names the YAML file")]


def test_utf8_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + QUICKSTART.read_bytes())
    assert load_space(path).name == "cpu-fixed-load"

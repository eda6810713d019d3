"""Tasks and task sources: the JSONL format, errors that name the line, seeded sampling."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from opd_selfplay.envs.tasks import ProceduralSource, Task, TaskList, load_hf_dataset, load_jsonl

HAS_DATASETS = importlib.util.find_spec("datasets") is not None


def test_task_round_trip_and_defaults():
    t = Task("2+2=", "4", id="a", solution="4", metadata={"k": [1]})
    assert Task.from_dict(json.loads(json.dumps(t.to_dict()))) == t
    bare = Task("p", {"tests": [1]})
    assert bare.to_dict() == {"id": "", "prompt": "p", "reference": {"tests": [1]}}
    with pytest.raises(TypeError, match="prompt must be str"):
        Task(3, "x")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"reference": "1"}, "missing the required field 'prompt'"),
        ({"prompt": "p"}, "missing the required field 'reference'"),
        ({"prompt": 5, "reference": "1"}, "'prompt' must be a string"),
        ({"prompt": "p", "reference": "1", "solution": 3}, "'solution' must be a string"),
        ({"prompt": "p", "reference": "1", "metadata": [1]}, "'metadata' must be an object"),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_task_from_dict_names_the_bad_field(row, message):
    with pytest.raises(ValueError, match=message):
        Task.from_dict(row)


def test_load_jsonl_reads_fields_skips_comments_and_numbers_ids(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text(
        "// a comment\n"
        '{"prompt": "1+1=", "reference": "2"}\n'
        "\n"
        '{"prompt": "p", "reference": {"tests": []}, "id": "x", "solution": "s", '
        '"metadata": {"category": "c"}}\n',
        encoding="utf-8",
    )
    tasks = load_jsonl(path)
    assert len(tasks) == 2
    assert tasks[0] == Task("1+1=", "2", id="mine-2")
    assert tasks[1].id == "x" and tasks[1].solution == "s"
    assert tasks[1].metadata == {"category": "c"} and tasks[1].reference == {"tests": []}
    assert len(load_jsonl(path, limit=1)) == 1


def test_load_jsonl_errors_name_file_and_line(tmp_path):
    bad_json = tmp_path / "a.jsonl"
    bad_json.write_text('{"prompt": "p", "reference": "1"}\n{oops\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"a\.jsonl:2: not JSON"):
        load_jsonl(bad_json)
    bad_task = tmp_path / "b.jsonl"
    bad_task.write_text('{"prompt": "p"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"b\.jsonl:1: task is missing the required field"):
        load_jsonl(bad_task)
    empty = tmp_path / "c.jsonl"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no tasks"):
        load_jsonl(empty)
    with pytest.raises(FileNotFoundError):
        load_jsonl(tmp_path / "missing.jsonl")


def test_load_jsonl_with_a_transform(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"q": "a?", "a": 1}\n{"q": "b?", "a": 2}\n', encoding="utf-8")
    tasks = load_jsonl(path, transform=lambda row, i: Task(row["q"], str(row["a"]), id=f"q{i}"))
    assert [(t.prompt, t.reference, t.id) for t in tasks] == [("a?", "1", "q0"), ("b?", "2", "q1")]
    path.write_text('{"x": 1}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"q\.jsonl:1: 'q'"):
        load_jsonl(path, transform=lambda row, i: Task(row["q"], "1"))


def test_task_list_sampling_is_seeded_and_indexing_checked():
    tasks = TaskList([Task(f"p{i}", str(i)) for i in range(10)], name="ten")
    draw = [tasks.sample(np.random.default_rng(3)).prompt for _ in range(5)]
    assert len(set(draw)) == 1  # same RNG state, same task
    rng = np.random.default_rng(0)
    assert len({tasks.sample(rng).prompt for _ in range(100)}) == 10
    assert tasks[-1].prompt == "p9"
    with pytest.raises(IndexError, match="ten: task index 10 out of range 0..9"):
        tasks[10]
    with pytest.raises(ValueError, match="empty: no tasks"):
        TaskList([], name="empty")


def test_task_list_split_and_filter():
    tasks = TaskList([Task(f"p{i}", str(i), metadata={"even": i % 2 == 0}) for i in range(10)])
    a, b = tasks.split(0.8, seed=1)
    assert (len(a), len(b)) == (8, 2)
    assert sorted(t.prompt for t in [*a, *b]) == sorted(t.prompt for t in tasks)
    assert [t.prompt for t in tasks.split(0.8, seed=1)[1]] == [t.prompt for t in b]
    assert len(tasks.filter(lambda t: t.metadata["even"])) == 5
    with pytest.raises(ValueError, match="cannot split"):
        tasks.split(1.0)


def test_procedural_source_is_a_pure_function_of_the_rng():
    def gen(rng, difficulty):
        n = int(rng.integers(10**difficulty))
        return Task(str(n), str(n))

    src = ProceduralSource(gen, difficulty=3)
    assert [t.prompt for t in src.take(5, seed=7)] == [t.prompt for t in src.take(5, seed=7)]
    assert all(int(t.prompt) < 1000 for t in src.take(50))


@pytest.mark.skipif(HAS_DATASETS, reason="checks the message shown when datasets is missing")
def test_load_hf_dataset_without_datasets_says_how_to_install(tmp_path):
    with pytest.raises(ImportError, match=r"pip install 'opd-selfplay\[datasets\]'"):
        load_hf_dataset("json", data_files=str(tmp_path / "x.jsonl"))


@pytest.mark.skipif(not HAS_DATASETS, reason="Hugging Face 'datasets' is not installed")
def test_load_hf_dataset_reads_local_json_files(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    path = tmp_path / "train.jsonl"
    path.write_text(
        "".join(
            json.dumps({"prompt": f"{i}+1=", "reference": str(i + 1)}) + "\n" for i in range(5)
        ),
        encoding="utf-8",
    )
    tasks = load_hf_dataset("json", data_files=str(path), cache_dir=str(tmp_path / "cache"))
    assert [t.reference for t in tasks] == ["1", "2", "3", "4", "5"]
    limited = load_hf_dataset(
        "json",
        data_files=str(path),
        limit=2,
        transform=lambda row, i: Task(row["prompt"], row["reference"], id=f"r{i}"),
        cache_dir=str(tmp_path / "cache"),
    )
    assert [t.id for t in limited] == ["r0", "r1"]

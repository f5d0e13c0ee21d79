"""Job requests are data with limits: every hostile shape is rejected with the offending field named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

from framework.dispatch.models import (
    MAX_ARRAY_TASKS,
    REJECTED_COPY_CHARS,
    BrokerOp,
    JobRequest,
    RequestError,
    bounded_copy,
    describe_validation_error,
    parse_array_spec,
    resolve_cwd,
)
from framework.dispatch.slurm import parse_scontrol_node

OPS: TypeAdapter[object] = TypeAdapter(BrokerOp)


def rejected_field(data: dict[str, object]) -> str:
    with pytest.raises(ValidationError) as info:
        OPS.validate_python(data)
    return describe_validation_error(info.value).field


def submit(**request: object) -> dict[str, object]:
    return {"op": "submit", "request": {"argv": ["python", "exp.py"], **request}}


def test_shell_metacharacters_stay_literal_argv() -> None:
    argv = ["python", "-c", "print(1); rm -rf / && $(reboot) | `id` > /etc/passwd"]
    request = JobRequest(argv=argv)
    assert request.argv == argv


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"argv": []}, "request.argv"),
        ({"argv": [""]}, "request.argv"),
        ({"argv": ["python", "a\x00b"]}, "request.argv"),
        ({"argv": ["x" * 9000]}, "request.argv"),
        ({"cwd": "../outside"}, "request.cwd"),
        ({"cwd": "sub/../../etc"}, "request.cwd"),
        ({"env": {"LD_PRELOAD": "/tmp/evil.so"}}, "request.env"),
        ({"env": {"PATH": "/tmp"}}, "request.env"),
        ({"env": {"lowercase": "1"}}, "request.env"),
        ({"resources": {"gpus": -1}}, "request.resources.gpus"),
        ({"resources": {"nodes": 0}}, "request.resources.nodes"),
        ({"resources": {"shell": True}}, "request.resources.shell"),
        ({"name": "a b; rm"}, "request.name"),
        ({"tags": ["ok", "not ok"]}, "request.tags.1"),
        ({"array": []}, "request.array"),
        ({"array": [1, 1]}, "request.array"),
        ({"preexec": "curl x | sh"}, "request.preexec"),
    ],
)
def test_hostile_request_is_rejected_naming_the_field(
    request_fields: dict[str, object], field: str
) -> None:
    assert rejected_field(submit(**request_fields)) == field


def test_unknown_operation_and_unknown_top_level_field_are_rejected() -> None:
    assert rejected_field({"op": "exec", "cmd": "id"}) == "op"
    assert rejected_field({"op": "list", "evil": 1}) == "evil"


def test_allowed_environment_names() -> None:
    request = JobRequest(argv=["python"], env={"EXP_LR": "0.1", "OMP_NUM_THREADS": "1"})
    assert request.env == {"EXP_LR": "0.1", "OMP_NUM_THREADS": "1"}


def test_array_index_placeholder_is_substituted_as_plain_text() -> None:
    request = JobRequest(argv=["python", "exp.py", "--seed={index}", "$(index)"], array=[3])
    assert request.argv_for(3) == ["python", "exp.py", "--seed=3", "$(index)"]


def test_array_spec_parsing() -> None:
    assert parse_array_spec("0-3,7") == [0, 1, 2, 3, 7]
    with pytest.raises(ValueError, match="not N or N-M"):
        parse_array_spec("1;2")
    with pytest.raises(ValueError, match="ends before"):
        parse_array_spec("5-2")
    with pytest.raises(ValueError, match=str(MAX_ARRAY_TASKS)):
        parse_array_spec(f"0-{MAX_ARRAY_TASKS}")


def test_cwd_symlink_escaping_the_workspace_is_rejected(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    (workspace / "sub").mkdir(parents=True)
    (workspace / "escape").symlink_to(tmp_path)
    assert resolve_cwd(workspace, "sub") == (workspace / "sub").resolve()
    assert resolve_cwd(workspace, str(workspace)) == workspace.resolve()
    with pytest.raises(RequestError, match="outside the workspace") as info:
        resolve_cwd(workspace, "escape")
    assert info.value.field == "cwd"
    with pytest.raises(RequestError, match="outside the workspace"):
        resolve_cwd(workspace, "/etc")
    with pytest.raises(RequestError, match="does not exist"):
        resolve_cwd(workspace, "missing")


def test_operations_round_trip_through_json() -> None:
    op = OPS.validate_python(json.loads(json.dumps(submit(array=[0, 1], tags=["sweep"]))))
    assert op.request.array == [0, 1]  # type: ignore[attr-defined]


def test_scontrol_node_line_gives_gpu_and_cpu_counts() -> None:
    line = (
        "NodeName=n2 Arch=x86_64 CoresPerSocket=1 CPUAlloc=3 CPUTot=4 Gres=gpu:2 State=MIXED "
        "CfgTRES=cpu=4,mem=4000M,billing=4,gres/gpu=2 AllocTRES=cpu=3,gres/gpu=1"
    )
    node = parse_scontrol_node(line)
    assert (node.name, node.state, node.gpus_total, node.gpus_busy, node.cpus_busy) == (
        "n2",
        "mixed",
        2,
        1,
        3,
    )


def test_sacct_line_for_never_started_array_tasks_expands_to_each_task() -> None:
    from framework.dispatch.slurm import expand_array_ids

    assert expand_array_ids("5822_[3-5%1000]") == ["5822_3", "5822_4", "5822_5"]
    assert expand_array_ids("12_[1,4-5]") == ["12_1", "12_4", "12_5"]
    assert expand_array_ids("12_7") == ["12_7"] and expand_array_ids("13") == ["13"]


def test_copy_of_a_rejected_request_is_bounded_whatever_its_shape() -> None:
    hostile = [
        json.dumps({"op": "submit", "request": {"argv": ["x" * 200_000]}}).encode(),
        json.dumps({"op": "submit", "request": {"argv": ["ab"] * 60_000}}).encode(),
        json.dumps(
            {"op": "submit", "request": {"env": {f"K{i}" * 20: "v" * 900 for i in range(200)}}}
        ).encode(),
        b"[" * 100_000,  # deeper than the JSON parser goes
        b"[" * 500 + b"]" * 500,
        b"\xff\xfe not json " * 10_000,
    ]
    for raw in hostile:
        assert len(json.dumps(bounded_copy(raw))) < 2 * REJECTED_COPY_CHARS, raw[:40]


def test_copy_of_a_rejected_request_keeps_what_an_auditor_needs() -> None:
    raw = json.dumps(
        {"op": "submit", "request": {"argv": ["python", "x" * 5000], "cwd": "../../etc"}}
    ).encode()
    copy = bounded_copy(raw)
    assert copy["op"] == "submit"
    assert copy["request"]["argv"][0] == "python"
    assert copy["request"]["argv"][1].endswith("(5000 characters)")
    assert copy["request"]["cwd"] == "../../etc"
    assert bounded_copy(b"not json\n") == "not json\n"

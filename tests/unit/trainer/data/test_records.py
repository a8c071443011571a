"""Every malformed line is refused with its file and line named; every format's good lines normalize as documented."""

from __future__ import annotations

import json

import pytest

from finetune_trainer.data import DataError
from finetune_trainer.data.files import read_hub, read_jsonl, read_paths
from finetune_trainer.data.records import normalize


def refused(path, fmt: str) -> DataError:
    with pytest.raises(DataError) as info:
        read_jsonl(path, fmt)
    return info.value


def assert_at(err: DataError, path, line, *phrases: str) -> None:
    assert err.file == str(path)
    assert err.line == line
    prefix = f"{path}:{line}: " if line is not None else f"{path}: "
    assert str(err).startswith(prefix), str(err)
    for phrase in phrases:
        assert phrase in str(err), str(err)


# --- bad input, one test per case -------------------------------------------------------------------------------


def test_bad_json_names_line(write_jsonl, good):
    path = write_jsonl([good["text"], good["text"], '{"text": "unterminated'])
    assert_at(refused(path, "text"), path, 3, "not valid JSON", "column")


def test_line_that_is_not_an_object(write_jsonl, good):
    path = write_jsonl([good["text"], '["a", "b"]'])
    assert_at(refused(path, "text"), path, 2, "expected a JSON object, got list", "JSONL")


def test_missing_key(write_jsonl, good):
    path = write_jsonl([good["alpaca"], {"instruction": "Translate to French:", "input": "dog"}])
    assert_at(refused(path, "alpaca"), path, 2, "missing key 'output'")


def test_wrong_type_number_output(write_jsonl, good):
    path = write_jsonl([good["alpaca"], good["alpaca"], {"instruction": "Add 2 and 2", "output": 4}])
    assert_at(refused(path, "alpaca"), path, 3, "'output' must be a string, got number")


def test_messages_not_a_list(write_jsonl):
    path = write_jsonl([{"messages": {"role": "user", "content": "hi"}}])
    assert_at(refused(path, "messages"), path, 1, "'messages' must be a list of messages, got object")


def test_message_not_an_object(write_jsonl, chat):
    path = write_jsonl([{"messages": chat}, {"messages": ["hello", *chat]}])
    assert_at(refused(path, "messages"), path, 2, "messages[0] must be an object")


def test_message_missing_content(write_jsonl, chat):
    chat[2] = {"role": "assistant"}
    path = write_jsonl([{"messages": chat}])
    assert_at(refused(path, "messages"), path, 1, "messages[2] is missing key 'content'")


def test_empty_file(write_jsonl):
    path = write_jsonl([])
    assert_at(refused(path, "text"), path, None, "no examples")


def test_blank_lines_only_file(write_jsonl):
    path = write_jsonl(["", "   ", ""])
    assert_at(refused(path, "text"), path, None, "no examples")


def test_whitespace_only_content(write_jsonl, chat):
    chat[4]["content"] = "  \n "
    path = write_jsonl([{"messages": chat}])
    assert_at(refused(path, "messages"), path, 1, "messages[4].content", "is empty")


def test_empty_text(write_jsonl, good):
    path = write_jsonl([good["text"], {"text": ""}])
    assert_at(refused(path, "text"), path, 2, "'text' is empty")


def test_unknown_chat_role(write_jsonl, chat):
    chat[1]["role"] = "tool"
    path = write_jsonl([{"messages": chat}])
    assert_at(refused(path, "messages"), path, 1, "messages[1].role is 'tool'", "system, user, assistant")


def test_unknown_sharegpt_role(write_jsonl, good):
    bad = {"conversations": [{"from": "bot", "value": "hi"}, {"from": "gpt", "value": "hello"}]}
    path = write_jsonl([good["sharegpt"], bad])
    assert_at(refused(path, "sharegpt"), path, 2, "conversations[0].from is 'bot'", "human", "gpt")


def test_no_assistant_turn(write_jsonl, chat):
    path = write_jsonl([{"messages": chat[:2]}])
    assert_at(refused(path, "messages"), path, 1, "no assistant turn")


def test_trailing_user_turn_is_an_error(write_jsonl, chat):
    path = write_jsonl([{"messages": chat}, {"messages": chat[:4]}])
    assert_at(refused(path, "messages"), path, 2, "ends with a 'user' turn after the last assistant turn",
              "never trained")


def test_non_utf8_bytes_name_the_line(write_jsonl, good):
    path = write_jsonl([json.dumps(good["text"]).encode(), b'{"text": "caf\xe9"}'])
    assert_at(refused(path, "text"), path, 2, "not valid UTF-8", "0xe9")


def test_mixed_formats_messages_line_in_alpaca_file(write_jsonl, good):
    path = write_jsonl([good["alpaca"], good["alpaca"], good["messages"]])
    assert_at(refused(path, "alpaca"), path, 3, "line 3 looks like 'messages' but spec.dataset.format is 'alpaca'")


def test_mixed_formats_preference_line_in_prompt_completion_file(write_jsonl, good):
    path = write_jsonl([good["prompt-completion"], good["preference"]])
    assert_at(refused(path, "prompt-completion"), path, 2,
              "line 2 looks like 'preference' but spec.dataset.format is 'prompt-completion'")


def test_prompt_completion_mixing_string_and_messages(write_jsonl):
    path = write_jsonl([{"prompt": "Hi", "completion": [{"role": "assistant", "content": "Hello"}]}])
    assert_at(refused(path, "prompt-completion"), path, 1, "both be strings or both be lists")


def test_preference_wrong_type(write_jsonl, good):
    path = write_jsonl([good["preference"], {"prompt": "Is 3 odd?", "chosen": "yes", "rejected": None}])
    assert_at(refused(path, "preference"), path, 2, "'rejected' must be a string, got null")


def test_missing_path_and_empty_directory(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_paths(["nowhere.jsonl"], "text", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no \*.jsonl or \*.json files"):
        read_paths(["empty"], "text", tmp_path)


def test_hub_rows_are_named_by_hub_id_and_row_index(good):
    """read_hub normalizes each row with file `hub:<id>` and its 0-based row index (no network here)."""
    with pytest.raises(DataError) as info:
        normalize({"instruction": "x"}, "alpaca", "hub:org/data", 7)
    assert str(info.value).startswith("hub:org/data:7: ")
    with pytest.raises(DataError, match=r"row 7 looks like 'text'"):
        normalize(good["text"], "alpaca", "hub:org/data", 7)


def test_hub_reader_goes_through_datasets(tmp_path, monkeypatch, good):
    """`load_dataset` also takes a local folder of JSONL: the same code path as a hub id, offline."""
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    folder = tmp_path / "hub"
    folder.mkdir()
    (folder / "train.jsonl").write_text(json.dumps(good["text"]) + "\n" + json.dumps({"text": 3}) + "\n")
    with pytest.raises(DataError) as info:
        read_hub(str(folder), "train", "text")
    assert str(info.value) == f"hub:{folder}:1: 'text' must be a string, got number"


# --- good input -------------------------------------------------------------------------------------------------


def test_alpaca_becomes_a_user_and_assistant_turn(write_jsonl, good):
    no_input = {"instruction": "Name a colour.", "input": "", "output": "blue"}
    [with_input, without] = read_jsonl(write_jsonl([good["alpaca"], no_input]), "alpaca")
    assert with_input.kind == "chat"
    assert with_input.data["messages"] == [{"role": "user", "content": "Translate to French:\n\ncat"},
                                           {"role": "assistant", "content": "chat"}]
    assert without.data["messages"][0] == {"role": "user", "content": "Name a colour."}


def test_messages_kept_as_role_and_content(write_jsonl, chat):
    chat[2]["name"] = "bot"  # extra keys are dropped
    [record] = read_jsonl(write_jsonl([{"messages": chat}]), "messages")
    assert record.kind == "chat" and record.line == 1
    assert [m["role"] for m in record.data["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    assert record.data["messages"][2] == {"role": "assistant", "content": "even"}


def test_sharegpt_roles_renamed(write_jsonl, good):
    [record] = read_jsonl(write_jsonl([good["sharegpt"]]), "sharegpt")
    assert record.data["messages"] == [{"role": "system", "content": "Answer briefly."},
                                       {"role": "user", "content": "Is 1234 even or odd?"},
                                       {"role": "assistant", "content": "even"}]


def test_prompt_completion_plain_and_conversational(write_jsonl, good):
    conv = {"prompt": [{"role": "user", "content": "Hi"}], "completion": [{"role": "assistant", "content": "Hello"}]}
    plain, conversational = read_jsonl(write_jsonl([good["prompt-completion"], conv]), "prompt-completion")
    assert plain.data == good["prompt-completion"] and not plain.conversational
    assert conversational.data == conv and conversational.conversational


def test_text(write_jsonl, good):
    [record] = read_jsonl(write_jsonl([good["text"]]), "text")
    assert (record.kind, record.data) == ("text", good["text"])


def test_preference_plain_and_conversational(write_jsonl, good):
    conv = {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Is 3 odd?"}],
            "chosen": [{"role": "assistant", "content": "yes"}], "rejected": [{"role": "assistant", "content": "no"}]}
    plain, conversational = read_jsonl(write_jsonl([good["preference"], conv]), "preference")
    assert plain.kind == "preference" and plain.data == good["preference"]
    assert conversational.data == conv and conversational.conversational


def test_directory_read_in_sorted_order_with_blank_lines_and_bom(tmp_path, write_jsonl):
    write_jsonl([{"text": "second file"}], "dir/b.jsonl")
    (tmp_path / "dir" / "a.jsonl").write_bytes(b'\xef\xbb\xbf{"text": "first file"}\n\n{"text": "line 3"}\n')
    write_jsonl([{"text": "ignored, not jsonl"}], "dir/c.txt")
    records = read_paths(["dir"], "text", tmp_path)
    assert [(r.data["text"], r.line) for r in records] == [("first file", 1), ("line 3", 3), ("second file", 1)]
    assert records[0].file == str(tmp_path / "dir" / "a.jsonl")

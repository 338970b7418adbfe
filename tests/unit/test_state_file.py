"""The --state file: one JSON string per line, read back exactly, anything else refused."""
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudtrail_es.backfill.run import StateFile, StateFileError
from cloudtrail_es.core.errors import ConfigurationError
from cloudtrail_es.write.processor import ObjectRef

KEY = "AWSLogs/1/CloudTrail/r/2024/01/01/1_CloudTrail_r_20240101T0000Z_a.json.gz"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(min_size=1), min_size=1, max_size=8, unique=True),
       st.text(min_size=1))
def test_whatever_the_keys_hold_only_the_files_marked_are_done(tmp_path_factory, keys, other):
    path = tmp_path_factory.mktemp("state") / "state"
    state = StateFile(path)
    for key in keys:
        state.mark(ObjectRef("b", key))
    again = StateFile(path)
    assert again.done == {f"b/{key}" for key in keys}
    assert (ObjectRef("b", other) in again) == (other in keys)


def test_a_key_with_a_newline_cannot_mark_another_file(tmp_path):
    path = tmp_path / "state"
    StateFile(path).mark(ObjectRef("b", f"x\nb/{KEY}"))
    assert len(path.read_text().splitlines()) == 1
    assert ObjectRef("b", KEY) not in StateFile(path)


@pytest.mark.parametrize("content", [
    "b/" + KEY + "\n",                     # the old format: raw keys
    json.dumps("b/k") + "\n{}\n",           # JSON but not a string
    json.dumps("b/k") + "\nnot json\n" + json.dumps("b/j") + "\n",
    "\n",                                    # an empty line
])
def test_a_corrupt_or_old_state_file_is_a_usage_error(tmp_path, content):
    path = tmp_path / "state"
    path.write_text(content)
    with pytest.raises(StateFileError, match="corrupt at line") as raised:
        StateFile(path)
    assert isinstance(raised.value, ConfigurationError)  # the CLI's exit 2


def test_an_unreadable_state_file_is_a_usage_error(tmp_path):
    (tmp_path / "state").mkdir()
    with pytest.raises(StateFileError, match="cannot read"):
        StateFile(tmp_path / "state")
    (tmp_path / "binary").write_bytes(b"\xff\xfe\n")
    with pytest.raises(StateFileError, match="cannot read"):
        StateFile(tmp_path / "binary")


def test_a_last_line_cut_short_is_dropped_and_appending_goes_on(tmp_path):
    path = tmp_path / "state"
    path.write_text(json.dumps("b/one") + "\n" + '"b/tw')
    state = StateFile(path)
    assert state.done == {"b/one"}
    state.mark(ObjectRef("b", "three"))
    assert StateFile(path).done == {"b/one", "b/three"}


def test_a_complete_last_line_without_newline_is_kept(tmp_path):
    path = tmp_path / "state"
    path.write_text(json.dumps("b/one"))
    state = StateFile(path)
    state.mark(ObjectRef("b", "two"))
    assert StateFile(path).done == {"b/one", "b/two"}

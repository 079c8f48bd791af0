"""drdpgan.runlog.CSVLog: append-only logs that survive a resume by newer code."""

from __future__ import annotations

import pandas as pd

from drdpgan.runlog import CSVLog


def test_csvlog_keeps_an_existing_files_columns_and_appends_new_ones_so_old_rows_never_shift(tmp_path):
    """A run resumed by code that logs one more column goes on in the file's own columns, the new one appended
    after them (old rows empty there); a column the new header drops stays, empty from then on."""
    path = tmp_path / "losses.csv"
    CSVLog(path, ["step", "a", "b"]).write({"step": 1, "a": 0.5, "b": 2.0})
    newer = CSVLog(path, ["step", "a", "new", "b"])
    assert newer.header == ["step", "a", "b", "new"]
    newer.write({"step": 2, "a": 0.25, "new": 9.0, "b": 3.0})
    df = pd.read_csv(path)
    assert list(df.columns) == ["step", "a", "b", "new"]
    assert df["b"].tolist() == [2.0, 3.0] and df["a"].tolist() == [0.5, 0.25]
    assert pd.isna(df["new"][0]) and df["new"][1] == 9.0
    CSVLog(path, ["step", "a"]).write({"step": 3, "a": 0.1})
    df = pd.read_csv(path)
    assert list(df.columns) == ["step", "a", "b", "new"] and df["a"].tolist() == [0.5, 0.25, 0.1]


def test_csvlog_writes_the_given_header_to_a_new_file_and_leaves_missing_keys_empty(tmp_path):
    path = tmp_path / "m.csv"
    CSVLog(path, ["step", "x", "y"]).write({"step": 1, "y": 4.0})
    df = pd.read_csv(path)
    assert list(df.columns) == ["step", "x", "y"] and df["x"].isna().all() and df["y"].tolist() == [4.0]


def test_checkpoint_step_reads_the_step_from_the_name_of_what_save_rotating_writes(tmp_path):
    from drdpgan.runlog import checkpoint_step, latest_checkpoint, save_rotating

    for step in (100, 1200):
        save_rotating({"step": step}, tmp_path, step, keep=2)
    assert checkpoint_step(latest_checkpoint(tmp_path)) == 1200

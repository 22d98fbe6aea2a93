import pandas as pd
import pytest

from fedsim.metrics.recorder import Recorder


def test_rows_are_readable_after_each_flush_and_merged_on_close(tmp_path):
    recorder = Recorder(tmp_path / "metrics.parquet")
    recorder.add(0, "accuracy", 0.1)
    recorder.extend(0, "node_accuracy", [0.2, 0.3], nodes=[4, 7])
    recorder.flush()
    partial = pd.read_parquet(tmp_path / "metrics.parquet")
    assert len(partial) == 3
    recorder.add(1, "accuracy", 0.5)
    recorder.flush()
    recorder.close()
    assert [p.name for p in (tmp_path / "metrics.parquet").iterdir()] == ["part-00000.parquet"]
    rows = pd.read_parquet(tmp_path / "metrics.parquet")
    assert rows["round"].tolist() == [0, 0, 0, 1]
    assert rows["metric"].tolist() == ["accuracy", "node_accuracy", "node_accuracy", "accuracy"]
    assert rows["value"].tolist() == [0.1, 0.2, 0.3, 0.5]
    assert rows["node"].isna().tolist() == [True, False, False, True]
    assert rows["node"].dropna().tolist() == [4, 7]


def test_an_existing_metrics_directory_is_never_reused(tmp_path):
    (tmp_path / "metrics.parquet").mkdir()
    with pytest.raises(FileExistsError):
        Recorder(tmp_path / "metrics.parquet")

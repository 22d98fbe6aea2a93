"""Bad input files end in one ConfigError line naming the file, never in a traceback.

First a table of hand-written bad files, one or more per format (the cases of a robustness
audit), then a fuzz test: random bytes, random text, and valid files cut short or with one
byte changed, in every format a setting reads.  Each either loads or stops with one line.
"""

import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
from conftest import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsim.cli import main
from fedsim.data.femnist import femnist
from fedsim.data.svmlight import svmlight
from fedsim.errors import ConfigError
from fedsim.simulated.churn import trace
from fedsim.simulated.network import network
from fedsim.topology.graphs import file as graph_file
from fedsim.topology.mixing import matrix

NODES = 4
W = np.full((NODES, NODES), 1 / NODES)  # a valid W on the complete graph of 4 nodes
BINARY = bytes(range(256))


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def graphml(graph: nx.Graph) -> bytes:
    return "\n".join(nx.generate_graphml(graph)).encode()


def leaf(users: dict[str, tuple[list, list]]) -> str:
    """A LEAF JSON file; ``users`` maps a writer id to its (x, y)."""
    user_data = {user: {"x": x, "y": y} for user, (x, y) in users.items()}
    num_samples = [len(y) for _, y in users.values()]
    return json.dumps({"users": list(users), "num_samples": num_samples, "user_data": user_data})


IMAGE = [0.5] * 784
LEAF = leaf({"f_0001": ([IMAGE, IMAGE], [3, 61]), "f_0002": ([IMAGE], [0])})


def load_femnist(path: Path) -> object:
    """FEMNIST of the root two levels above ``path`` (``root/train/a.json``), with a valid
    test file."""
    (path.parents[1] / "test").mkdir(exist_ok=True)
    (path.parents[1] / "test" / "a.json").write_text(LEAF)
    return femnist(str(path.parents[1]))


@dataclass(frozen=True)
class Format:
    """A file format that a setting reads: its file name, a valid file and its loader."""

    file: str
    valid: bytes
    load: Callable[[Path], object]
    setting: str  # the setting named in every error, followed by "=" and the path

    def where(self, path: Path) -> str:
        return f"{self.setting}={path.parents[1] if self.setting == 'data.root' else path}"


FORMATS = {
    "edge list": Format(
        "edges.txt",
        b"# a ring\n0 1\n1 2\n2 3\n3 0\n\n",
        lambda path: graph_file(NODES, 0, path=str(path)),
        "topology.path",
    ),
    "GraphML": Format(
        "graph.graphml",
        graphml(nx.cycle_graph(NODES)),
        lambda path: graph_file(NODES, 0, path=str(path)),
        "topology.path",
    ),
    "npy": Format(
        "w.npy", npy(W), lambda path: matrix(nx.complete_graph(NODES), str(path)), "mixing.path"
    ),
    "mtx": Format(
        "w.mtx",
        b"%%MatrixMarket matrix array real general\n4 4\n" + b"0.25\n" * 16,
        lambda path: matrix(nx.complete_graph(NODES), str(path)),
        "mixing.path",
    ),
    "csv": Format(
        "w.csv",
        b"0.25,0.25,0.25,0.25\n" * 4,
        lambda path: matrix(nx.complete_graph(NODES), str(path)),
        "mixing.path",
    ),
    "txt": Format(
        "w.txt",
        b"# W\n" + b"0.25 0.25 0.25 0.25\n" * 4,
        lambda path: matrix(nx.complete_graph(NODES), str(path)),
        "mixing.path",
    ),
    "FEMNIST": Format("femnist/train/a.json", LEAF.encode(), load_femnist, "data.root"),
    "svmlight": Format(
        "train.svm",
        b"1 1:0.5 3:2\n-1 2:1\n1 1:1.5\n-1 2:0.25 3:4\n",
        # A fixed width: a stray index of 10^8 would make a 400 MB row, too slow for a test.
        lambda path: svmlight(str(path), test_fraction=0.5, num_features=8),
        "data.path",
    ),
    "churn trace": Format(
        "trace.csv",
        b"node,start_s,end_s\n0,0,\n1,0,10\n1,20,inf\n2,5,15\n",
        lambda path: trace(NODES, 0, str(path)),
        "churn.path",
    ),
    "compute file": Format(
        "compute.txt",
        b"# seconds per sample\n0.001\n0.002\n",
        lambda path: network(NODES, 0, compute="file", compute_file=str(path)),
        "network.compute_file",
    ),
    "latency file": Format(
        "latency.txt",
        b"0, 20\n20, 0\n",
        lambda path: network(NODES, 0, latency="file", latency_file=str(path)),
        "network.latency_file",
    ),
}


def write(directory: Path, name: str, content: str | bytes) -> Path:
    path = directory / FORMATS[name].file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def load_or_one_line(directory: Path, name: str, content: str | bytes) -> str | None:
    """Load ``content`` as format ``name``: None when it loads, else the ConfigError's line
    (checked to be one line naming the setting and the file)."""
    path = write(directory, name, content)
    try:
        FORMATS[name].load(path)
    except ConfigError as error:
        message = str(error)
        assert "\n" not in message and FORMATS[name].where(path) in message, message
        return message
    return None


def test_every_valid_file_loads(tmp_path):
    for name, format_ in FORMATS.items():
        assert load_or_one_line(tmp_path / name, name, format_.valid) is None, name


def test_a_matrix_market_file_on_which_scipy_crashed_loads(tmp_path):
    # scipy 1.17's reader dies of a segmentation fault when the last line ends in a space.
    assert load_or_one_line(tmp_path, "mtx", FORMATS["mtx"].valid[:-1] + b" ") is None


GRAPHML = FORMATS["GraphML"].valid.decode()
NPY = FORMATS["npy"].valid
MTX = "%%MatrixMarket matrix coordinate {field} general\n4 4 {entries}\n"
ROW = "0.25,0.25,0.25,0.25\n"
NAN_W = W.copy()
NAN_W[0, 0] = np.nan
ONE = {"users": ["u"], "user_data": {"u": {"x": [IMAGE], "y": [1]}}}

# (format, bad content, what the message says after naming the setting and the file)
BAD_FILES = [
    # the 21 files of the audit that ended in tracebacks
    ("edge list", "0 1\nfoo bar\n", "line 2: expected two integer node ids, found 'foo bar'"),
    ("edge list", "0 1.5\n", "line 1: expected two integer node ids, found '0 1.5'"),
    ("edge list", BINARY, r"expected an edge list .*, found binary data \(byte 0x80 at offset"),
    ("GraphML", GRAPHML[: len(GRAPHML) // 2], "expected a GraphML file, found malformed XML"),
    (
        "GraphML",
        graphml(nx.Graph([(0, 1), (1, "b")])),
        "expected integer node ids, found node id 'b'",
    ),
    ("npy", npy(np.zeros((4, 4, 4))), r"expected a 4 x 4 matrix .*found shape \(4, 4, 4\)"),
    ("npy", npy(np.array([{"a": 1}], object)), "found an array of Python objects"),
    ("npy", npy(np.full((4, 4), "a")), "expected real numbers, found dtype <U1"),
    ("npy", NPY[:-8], "expected 128 bytes of array data, found 120"),
    ("npy", NPY[:60], "expected a .npy file .*, found EOF: reading array header"),
    ("mtx", MTX.format(field="real", entries="x"), "line 2: expected 3 sizes, found '4 4 x'"),
    ("csv", ROW + "0.5,0.5\n", r"line 2: expected 4 numbers \(a row of W\), found 2"),
    ("csv", "a,b,c,d\n", "line 1: expected numbers separated by commas or spaces, found 'a,b,c,d'"),
    ("FEMNIST", "{not json", "expected LEAF JSON .*, found invalid JSON"),
    ("FEMNIST", '{"user_data": {}}', "expected a list 'users', found no key 'users'"),
    ("FEMNIST", '{"users": ["u"], "user_data": {}}', "found 'u' missing"),
    (
        "FEMNIST",
        leaf({"u": ([IMAGE, [0.5] * 3], [1, 2])}),
        "user u: expected each x a list of 784 .*, found one of 3",
    ),
    (
        "FEMNIST",
        leaf({"u": ([IMAGE], ["a"])}),
        "user u: expected integer labels in 0..61, found 'a'",
    ),
    ("FEMNIST", "", "expected LEAF JSON .*, found an empty file"),
    ("FEMNIST", "[1, 2]", "expected LEAF JSON .*, found a list"),
    ("churn trace", BINARY, "expected a CSV file node,start_s,end_s, found binary data"),
    ("compute file", BINARY, "expected a text file of numbers, found binary data"),
    # what the audit found loaded without a word
    ("edge list", "0 0\n0 1\n", "line 1: expected no self-loops, found node 0 linked to itself"),
    ("GraphML", graphml(nx.Graph([(0, 1), (2, 2)])), "found node 2 linked to itself"),
    ("edge list", "0 1 2 3\n", "line 1: expected two integer node ids, found '0 1 2 3'"),
    ("npy", npy(NAN_W), r"expected finite weights, found W\[0, 0\]=nan"),
    ("csv", ROW * 3 + "inf,0,0,0\n", r"expected finite weights, found W\[3, 0\]=inf"),
    ("npy", npy(W.astype(complex)), "expected real numbers, found dtype complex128"),
    ("mtx", MTX.format(field="complex", entries=1) + "1 1 1 0\n", "found field complex"),
    # files on which scipy's Matrix Market reader crashed the process (segmentation fault)
    (
        "mtx",
        MTX.format(field="real", entries=1) + "1 1 0.25\0\n",
        r"line 3: .*found '1 1 0.25\\x00'",
    ),
    ("FEMNIST", json.dumps(ONE).replace("0.5", "NaN", 1), "found nan in example 1"),
    ("svmlight", "1 1:nan\n-1 2:1\n1 1:1\n-1 2:2\n", "expected finite feature values, found nan"),
    ("svmlight", "1 1:1\n-1 2:1e999\n", "expected finite feature values, found inf in example 2"),
    ("churn trace", "node,start_s,end_s\n0,0,nan\n", "line 2: end_s='nan' is not a number"),
    ("compute file", "0.001\nnan\n", "line 2: 'nan' must hold finite numbers >= 0"),
    ("latency file", BINARY, "expected a text file of numbers, found binary data"),
    ("FEMNIST", BINARY, "expected LEAF JSON .*, found binary data"),
    ("svmlight", BINARY, "expected LIBSVM/svmlight lines .*, found could not convert"),
]


@pytest.mark.parametrize(
    "name, content, message",
    BAD_FILES,
    ids=[f"{name}-{i}" for i, (name, *_) in enumerate(BAD_FILES)],
)
def test_a_bad_file_is_named_in_one_line(tmp_path, name, content, message):
    found = load_or_one_line(tmp_path, name, content)
    assert found is not None, f"{name}: loaded {content!r}"
    assert re.search(message, found), found


DECENTRALIZED = ["strategy=dpsgd", "num_nodes=4"]  # D-PSGD reads the topology and W
FEDERATED = ["num_nodes=4", "strategy.sample_size=4"]


@pytest.mark.parametrize(
    "overrides, file, content",
    [
        ([*DECENTRALIZED, "topology=file"], "topology.path=g.txt", "0 1\nfoo bar\n"),
        ([*DECENTRALIZED, "topology=file"], "topology.path=g.graphml", GRAPHML[:200]),
        ([*DECENTRALIZED, "mixing=matrix"], "mixing.path=w.npy", npy(np.array([{}], object))),
        (
            [*FEDERATED, "network=file", "network.latency=constant"],
            "network.compute_file=c",
            BINARY,
        ),
        ([*FEDERATED, "churn=trace"], "churn.path=trace.csv", "node,start_s,end_s\n0,0,nan\n"),
    ],
)
def test_the_cli_reports_a_bad_file_in_one_line(tmp_path, capsys, overrides, file, content):
    """As ``fedsim run``: one line on stderr, status 2, before any round runs."""
    setting, name = file.split("=")
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    run_dir = tmp_path / "run"
    status = main(["run", "rounds=1", *overrides, f"{setting}={path}", f"hydra.run.dir={run_dir}"])
    out, err = capsys.readouterr()
    assert status == 2 and out == "" and not run_dir.exists()
    assert err.startswith(f"fedsim: config error: {setting}={path}") and err.count("\n") == 1


# Text that parsers of these formats might half accept: digits, separators, JSON and XML.
TEXT = st.text(alphabet='0123456789 .,:-+eE#\n\tnaif{}[]"<>/=xyqid_', max_size=200)


def corrupted(valid: bytes) -> st.SearchStrategy[bytes]:
    """Random bytes, random text, ``valid`` cut short, or ``valid`` with one byte changed."""
    cut = st.integers(0, len(valid)).map(lambda end: valid[:end])
    changed = st.tuples(st.integers(0, len(valid) - 1), st.integers(0, 255)).map(
        lambda change: valid[: change[0]] + bytes([change[1]]) + valid[change[0] + 1 :]
    )
    return st.one_of(st.binary(max_size=200), TEXT.map(str.encode), cut, changed)


@pytest.mark.parametrize("name", FORMATS)
@settings(max_examples=examples(60))
@given(data=st.data())
def test_a_fuzzed_file_loads_or_is_named_in_one_line(tmp_path_factory, name, data):
    directory = tmp_path_factory.getbasetemp() / "fuzz" / name.replace(" ", "_")
    content = data.draw(corrupted(FORMATS[name].valid), label="content")
    load_or_one_line(directory, name, content)

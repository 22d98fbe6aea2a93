"""Modules loaded on first use: what a run without a graph never executes."""

import subprocess
import sys


def run(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_a_lazy_module_runs_on_its_first_attribute_and_is_then_the_module():
    code = (
        "import sys\n"
        "from fedsim.lazy import lazy_module\n"
        "sp = lazy_module('scipy.sparse')\n"
        "print(type(sys.modules['scipy.sparse']).__name__, 'scipy.sparse._base' in sys.modules)\n"
        "import scipy, scipy.sparse\n"
        "matrix = sp.csr_array([[0.0, 1.0]])\n"
        "print(type(sys.modules['scipy.sparse']).__name__, scipy.sparse is sp,"
        " matrix.nnz, 'scipy.sparse._base' in sys.modules)\n"
    )
    assert run(code).splitlines() == ["_LazyModule False", "module True 1 True"]


def test_building_a_graph_loads_networkx_and_scipy():
    code = (
        "import sys\n"
        "from fedsim.topology import Topology, complete, metropolis_hastings\n"
        "print('networkx.algorithms' in sys.modules)\n"
        "topology = Topology(complete(4, seed=0), metropolis_hastings)\n"
        "print(topology.mixing(0).toarray()[0].tolist(), 'networkx.algorithms' in sys.modules)\n"
    )
    assert run(code).splitlines() == ["False", "[0.25, 0.25, 0.25, 0.25] True"]


def test_a_name_that_is_not_a_module_is_refused():
    code = (
        "from fedsim.lazy import lazy_module\n"
        "try:\n"
        "    lazy_module('no_such_module_here')\n"
        "except ModuleNotFoundError as error:\n"
        "    print(error)\n"
    )
    assert run(code) == "No module named 'no_such_module_here'"

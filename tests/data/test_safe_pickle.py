import collections
import os
import pickle

import numpy as np
import pytest

from unimp_core.data import safe_pickle
from unimp_core.errors import UnimpError


class _RunsCommand:
    """Pickles into 'call os.system(cmd)' when loaded by the standard unpickler."""

    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


class _CallsEval:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


PLAIN = {
    "list": [1, 2.5, "x", None, True],
    "tuple": ("feature", "adj", "sentence", 0.5),
    "set": {1, 2},
    "frozen": frozenset({"a"}),
    "bytes": b"\x00\xff",
    "bytearray": bytearray(b"ab"),
    "complex": 1 + 2j,
    "nested": [{"user": "A1", "item": "B2", "template": ("f", "a", "s", 1)}],
    "ordered": collections.OrderedDict([("b", 1), ("a", 2)]),
    7: "int key",
}


@pytest.mark.parametrize("protocol", range(0, pickle.HIGHEST_PROTOCOL + 1))
def test_plain_containers_round_trip(protocol):
    assert safe_pickle.loads(pickle.dumps(PLAIN, protocol=protocol)) == PLAIN


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_numpy_arrays_and_scalars_load(protocol):
    obj = {
        "ints": np.arange(6, dtype=np.int64).reshape(2, 3),
        "floats": np.linspace(0, 1, 4, dtype=np.float32),
        "strings": np.array(["a", "bc"]),
        "objects": np.array(["x", 1], dtype=object),
        "scalar": np.float64(2.5),
        "int_scalar": np.int64(3),
    }
    back = safe_pickle.loads(pickle.dumps(obj, protocol=protocol))
    for key in ("ints", "floats", "strings", "objects"):
        assert back[key].dtype == obj[key].dtype and back[key].tolist() == obj[key].tolist()
    assert back["scalar"] == 2.5 and isinstance(back["scalar"], np.float64)
    assert back["int_scalar"] == 3


def test_malicious_pickle_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    evil = pickle.dumps([1, _RunsCommand(f"touch {marker}")])
    path = tmp_path / "reviews.pickle"
    path.write_bytes(evil)
    with pytest.raises(UnimpError, match=r"reviews\.pickle: refusing to load global (posix|os|nt)\.system"):
        safe_pickle.load(path)
    assert not marker.exists()
    # Sanity check of the test itself: the standard loader would have run the command.
    pickle.loads(evil)
    assert marker.exists()


def test_handwritten_os_system_pickle_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()
    with pytest.raises(UnimpError, match=r"^data: refusing to load global os\.system$"):
        safe_pickle.loads(evil, "data")
    assert not marker.exists()


@pytest.mark.parametrize("payload", [
    pickle.dumps(_CallsEval()),
    b"cbuiltins\ngetattr\n(cbuiltins\nobject\nS'__subclasses__'\ntR.",
    b"c__builtin__\neval\n(S'1'\ntR.",
    b"csubprocess\nPopen\n(S'true'\ntR.",
    b"cnumpy\nload\n(S'x.npy'\ntR.",
    b"cnumpy._core.multiarray\nunknown\n.",
    b"ccopyreg\n_reconstructor\n.",
])
def test_other_globals_refused(payload):
    with pytest.raises(UnimpError, match="refusing to load global"):
        safe_pickle.loads(payload, "x.pkl")


def test_codecs_encode_only_for_latin1():
    assert safe_pickle.loads(b"c_codecs\nencode\n(Vab\nVlatin1\ntR.") == b"ab"
    with pytest.raises(UnimpError, match="not a readable pickle: .*only allowed for Latin-1"):
        safe_pickle.loads(b"c_codecs\nencode\n(Vab\nVrot13\ntR.", "x.pkl")


def test_damaged_pickle_is_one_line_error(tmp_path):
    path = tmp_path / "cut.pkl"
    path.write_bytes(pickle.dumps(list(range(100)))[:-5])
    with pytest.raises(UnimpError, match=r"cut\.pkl: not a readable pickle") as info:
        safe_pickle.load(path)
    assert "\n" not in str(info.value)
    with pytest.raises(UnimpError, match="cannot read"):
        safe_pickle.load(tmp_path / "absent.pkl")


def test_persistent_ids_refused():
    with pytest.raises(UnimpError, match="persistent id"):
        safe_pickle.loads(b"Pabc\n.", "x.pkl")

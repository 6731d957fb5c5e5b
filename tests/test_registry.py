"""The codec registry: entry-point discovery, lookups, conflicts, and an out-of-tree plugin."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from clusterrpc.codecs import Codec, CodecRegistry, default_registry, get_codec
from clusterrpc.codecs.xmlrpc import XmlRpcCodec
from clusterrpc.errors import ConfigurationError, UnknownCodecError
from clusterrpc.values import Limits


def test_builtins_are_registered_through_entry_points() -> None:
    registry = CodecRegistry.from_entry_points()
    assert {"xmlrpc", "compact", "json"} <= set(registry.names())
    assert registry.by_id(1).name == "xmlrpc"
    assert registry.by_id(2).name == "compact"
    assert registry.by_id(3).name == "json"
    assert "entry point 'xmlrpc'" in registry.origin("xmlrpc")
    assert "(from clusterrpc)" in registry.origin("xmlrpc")


def test_get_codec_defaults_and_limits() -> None:
    codec = get_codec()
    assert isinstance(codec, XmlRpcCodec)
    limits = Limits(max_depth=3)
    assert get_codec("json", limits=limits).limits is limits
    assert get_codec(1).name == "xmlrpc"


def test_unknown_name_and_id_are_clear_errors() -> None:
    with pytest.raises(UnknownCodecError, match="unknown codec 'nope'; installed: xmlrpc"):
        get_codec("nope")
    with pytest.raises(UnknownCodecError, match="unknown codec id 99"):
        default_registry().by_id(99)
    with pytest.raises(LookupError):  # UnknownCodecError is also a LookupError
        get_codec("nope")


def test_empty_registry_explains_missing_installation() -> None:
    with pytest.raises(UnknownCodecError, match="must be installed"):
        CodecRegistry([]).by_name("xmlrpc")


class _Clash(XmlRpcCodec):
    name = "clash"
    codec_id = 1


def test_conflicting_ids_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="codec wire id 1 is claimed twice"):
        CodecRegistry([XmlRpcCodec, _Clash])


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"name": "Bad Name", "codec_id": 200}, "codec name"),
        ({"name": "ok", "codec_id": 0}, "codec_id"),
        ({"name": "ok", "codec_id": 256}, "codec_id"),
        ({"name": "ok", "codec_id": 200, "media_type": "nope"}, "media_type"),
    ],
)
def test_invalid_codec_classes_are_refused(attrs: dict[str, object], message: str) -> None:
    bad = type("Bad", (XmlRpcCodec,), attrs)
    with pytest.raises(ConfigurationError, match=message):
        CodecRegistry([bad])


def test_non_codec_is_refused() -> None:
    expected = r"is not a clusterrpc\.codecs\.base\.Codec subclass"
    with pytest.raises(ConfigurationError, match=expected):
        CodecRegistry([int])  # type: ignore[list-item]


# -- plugins installed as real distributions ---------------------------------------------------


def _install_distribution(
    root: Path, name: str, entry_points: str, modules: dict[str, str]
) -> None:
    """Install a distribution the way pip leaves it: modules plus a .dist-info folder."""
    dist_info = root / f"{name.replace('-', '_')}-1.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Path]:
    sys.path.insert(0, str(tmp_path))
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        for module in [m for m in sys.modules if m.startswith("fake_plugin")]:
            del sys.modules[module]


def test_broken_plugin_does_not_take_others_down(site: Path) -> None:
    _install_distribution(
        site,
        "fake-plugin-broken",
        "[clusterrpc.codecs]\nbroken = fake_plugin_broken:Codec\n",
        {"fake_plugin_broken": "raise ImportError('missing dependency libfoo')\n"},
    )
    registry = CodecRegistry.from_entry_points()
    assert "xmlrpc" in registry
    with pytest.raises(ConfigurationError, match="failed to load: ImportError: missing dependency"):
        registry.create("broken")


def test_plugin_id_clash_is_refused_at_discovery(site: Path) -> None:
    _install_distribution(
        site,
        "fake-plugin-clash",
        "[clusterrpc.codecs]\nclash = fake_plugin_clash:Clash\n",
        {
            "fake_plugin_clash": """
                from clusterrpc.codecs.xmlrpc import XmlRpcCodec
                class Clash(XmlRpcCodec):
                    name = "clash"
                    codec_id = 2
            """
        },
    )
    with pytest.raises(ConfigurationError, match="claimed twice"):
        CodecRegistry.from_entry_points()


def test_entry_point_name_must_match_codec_name(site: Path) -> None:
    _install_distribution(
        site,
        "fake-plugin-misnamed",
        "[clusterrpc.codecs]\nalias = fake_plugin_misnamed:Named\n",
        {
            "fake_plugin_misnamed": """
                from clusterrpc.codecs.xmlrpc import XmlRpcCodec
                class Named(XmlRpcCodec):
                    name = "named"
                    codec_id = 150
            """
        },
    )
    with pytest.raises(ConfigurationError, match="differs from the codec's name"):
        CodecRegistry.from_entry_points()


ROT13_PACKAGE = Path(__file__).parent / "plugins" / "clusterrpc-rot13-codec"


@pytest.mark.skipif(
    importlib.util.find_spec("clusterrpc_rot13") is None,
    reason=f"the example plugin is not installed: pip install {ROT13_PACKAGE} (tox does this)",
)
def test_out_of_tree_plugin_is_discovered_and_used() -> None:
    registry = CodecRegistry.from_entry_points()
    assert "rot13" in registry
    assert "clusterrpc-rot13-codec" in registry.origin("rot13")
    codec = registry.create("rot13")
    assert isinstance(codec, Codec)
    assert registry.by_id(200).name == "rot13"
    body = codec.encode_call("election.vote", [{"term": 3, "candidate": "n1"}])
    assert b"<zrgubqPnyy>" in body  # ROT13 of <methodCall>
    decoded = codec.decode_call(body)
    assert decoded.method == "election.vote"
    assert decoded.params == ({"term": 3, "candidate": "n1"},)

"""Loads and checks a `gen-jax export` artifact with jax, numpy and safetensors
alone: this file imports nothing else, and export copies it into every artifact
as `load.py`, so a deploy target needs no gen_jax, flax or optax.

  python DIR/load.py DIR   # calls every function on example.npz, exits 1 on a mismatch

In Python: `art = Artifact(DIR); tokens, cache = art.call("decode", cache, ...)`.
"""

import json
import pathlib
import sys

import jax
import numpy as np
from jax import export
from safetensors.numpy import load_file

FORMAT = "gen_jax.export"
VERSION = 2  # 2: the LM's programs return log-probabilities


def length_buckets(limit: int, smallest: int) -> list[int]:
    """Powers of two from `smallest` below `limit`, then `limit`: the prompt
    lengths prefill compiles for and the attention windows decode has."""
    sizes, size = [], smallest
    while size < limit:
        sizes.append(size)
        size *= 2
    return sizes + [limit]


def unflatten(flat: dict[str, np.ndarray]) -> dict:
    """{"gen/conv/kernel": x} -> {"gen": {"conv": {"kernel": x}}}."""
    tree: dict = {}
    for name, value in flat.items():
        *parents, leaf = name.split("/")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def split_args(exported: export.Exported, leaves: list) -> list:
    """The positional arguments after `params`, rebuilt from their flat leaves
    (the order `jax.tree.leaves` gives) with the exported function's own tree."""
    args_def, _ = jax.tree_util.treedef_children(exported.in_tree)
    defs = jax.tree_util.treedef_children(args_def)[1:]
    args, start = [], 0
    for d in defs:
        args.append(jax.tree.unflatten(d, leaves[start : start + d.num_leaves]))
        start += d.num_leaves
    if start != len(leaves):
        raise ValueError(
            f"got {len(leaves)} argument arrays; the function takes {start}"
        )
    return args


def arg_spec(exported: export.Exported, index: int) -> tuple:
    """(tree, leaf avals) of positional argument `index` (0 is params); its
    symbolic dims are dimension expressions, not ints."""
    args_def, _ = jax.tree_util.treedef_children(exported.in_tree)
    defs = jax.tree_util.treedef_children(args_def)
    start = sum(d.num_leaves for d in defs[:index])
    return defs[index], exported.in_avals[start : start + defs[index].num_leaves]


class Artifact:
    """The manifest, params and deserialized functions of an export directory."""

    def __init__(self, directory: str):
        self.directory = pathlib.Path(directory)
        path = self.directory / "manifest.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} does not exist: DIR must be what `gen-jax export --out=DIR` wrote"
            )
        self.manifest = json.loads(path.read_text())
        if self.manifest.get("format") != FORMAT:
            raise ValueError(f"{path} is not a {FORMAT} manifest")
        if self.manifest.get("version") != VERSION:
            raise ValueError(
                f"{path} has format version {self.manifest.get('version')}; this "
                f"loader reads version {VERSION}: re-export with this gen_jax"
            )
        params = unflatten(load_file(str(self.directory / "params.safetensors")))
        self.params = params
        self.functions = {}
        for name, spec in self.manifest["functions"].items():
            blob = (self.directory / spec["file"]).read_bytes()
            self.functions[name] = export.deserialize(bytearray(blob))

    @property
    def family(self) -> str:
        return self.manifest["family"]

    def params_of(self, name: str, params: dict | None = None) -> dict:
        """The params subtree function `name` takes (its `params` leaves), of
        `params` (default: the artifact's own, on the host)."""
        flat = {}
        for key in self.manifest["functions"][name]["params"]:
            node = self.params if params is None else params
            for part in key.split("/"):
                node = node[part]
            flat[key] = node
        return unflatten(flat)

    def call(self, name: str, *args):
        """Runs function `name` on `args` (everything after params)."""
        return self.functions[name].call(self.params_of(name), *args)

    def check_examples(self) -> list[str]:
        """Every function on its example inputs; the outputs that differ from
        example.npz (bitwise), as messages."""
        examples = np.load(self.directory / "example.npz")
        problems = []
        for name in self.manifest["functions"]:
            count = sum(k.startswith(f"{name}/in/") for k in examples.files)
            inputs = [examples[f"{name}/in/{i}"] for i in range(count)]
            outputs = self.call(name, *split_args(self.functions[name], inputs))
            for i, got in enumerate(jax.tree.leaves(outputs)):
                want = examples[f"{name}/out/{i}"]
                if not np.array_equal(np.asarray(got), want):
                    diff = np.max(np.abs(np.asarray(got, np.float64) - want))
                    problems.append(
                        f"{name} output {i} differs (max |diff| {diff:.3g})"
                    )
        return problems


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: python {argv[0]} ARTIFACT_DIR", file=sys.stderr)
        return 2
    artifact = Artifact(argv[1])
    problems = artifact.check_examples()
    for line in problems:
        print(line, file=sys.stderr)
    names = ", ".join(artifact.functions)
    print(f"{artifact.family}: {names}: {'MISMATCH' if problems else 'examples match'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

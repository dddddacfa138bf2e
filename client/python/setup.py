"""Generates the API stubs (lensd/v1/lensd_pb2*.py) and copies the channels' service config from
the checkout's proto/ into the package being built; pyproject.toml holds the metadata."""
import pathlib
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

PROTO = pathlib.Path(__file__).resolve().parent.parent.parent / "proto"


class BuildWithStubs(build_py):
    def run(self):
        super().run()
        from grpc_tools import protoc  # a build requirement (pyproject.toml)

        root = pathlib.Path(self.build_lib)
        (root / "lensd" / "v1").mkdir(parents=True, exist_ok=True)
        (root / "lensd" / "v1" / "__init__.py").touch()
        args = ["protoc", f"-I{PROTO}", f"--python_out={root}", f"--grpc_python_out={root}",
                str(PROTO / "lensd" / "v1" / "lensd.proto")]
        if protoc.main(args) != 0:
            raise RuntimeError("protoc failed on " + args[-1])
        shutil.copy(PROTO / "lensd" / "v1" / "service_config.json", root / "lensd")


setup(cmdclass={"build_py": BuildWithStubs})

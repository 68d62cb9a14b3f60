"""Every package of charrnn is installed: setup.cfg lists each folder that holds an __init__.py, and
each package-data file it names exists (a folder left out installs a broken charrnn)."""
import configparser
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_setup_cfg_lists_every_package_and_its_data():
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    listed = {p.strip() for p in cfg["options"]["packages"].split("\n") if p.strip()}
    found = {os.path.relpath(d, ROOT).replace(os.sep, ".") for d, _, files in os.walk(os.path.join(ROOT, "charrnn"))
             if "__init__.py" in files}
    assert found <= listed, f"not in setup.cfg's packages: {sorted(found - listed)}"
    for package, names in cfg["options.package_data"].items():
        folder = os.path.join(ROOT, "corpora") if package == "charrnn.corpora_data" else \
            os.path.join(ROOT, *package.split("."))
        for name in names.split():
            assert os.path.isfile(os.path.join(folder, name)), f"{package}: {name} is missing"

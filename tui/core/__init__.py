"""abri's headless engine. Nothing in this package may import textual (an import-linter
contract in pyproject.toml and tests/unit/test_import_contract.py enforce it)."""

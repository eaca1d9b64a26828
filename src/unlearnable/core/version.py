"""The package's version: recorded in every manifest, run and result (`provenance.versions`)."""

__version__ = "0.1.0"

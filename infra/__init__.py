"""The reranker's Pulumi program: typed stack settings, one deployment spec, one module per target."""

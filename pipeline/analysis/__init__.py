"""Analysis stage library: reproduced Tables 3-11 beside the paper's numbers, figures, verdicts, report."""

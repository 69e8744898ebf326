"""The library behind the stages: the paper's quantities as pure functions, and the run lifecycle."""

"""Config → objects, one module per stage's needs: the dataset (sources), the model and its sampler chain
(models), the upstream folders each resolved and verified once (upstream, shards), and each stage's whole
job (jacobian, analysis). A stage imports only the modules it needs, so editing one stage's assembly
reruns only the DVC stages that import it. Nothing here writes outputs: stages hand these objects, with the
run spec (pipeline.runkeys.RunSpec), to pipeline.runs.run_stage.
"""

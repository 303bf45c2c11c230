"""Training: DeepSpeed ZeRO engines, segment-recurrent TBPTT, exact resume, MLflow tracking."""

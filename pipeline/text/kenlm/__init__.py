"""KenLM language models: CCNet normalisation, a modified Kneser-Ney estimator, scoring."""

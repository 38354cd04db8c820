// Pipeline: MALT's collaboration as pure functions — the pipeline's and the
// tree's plans (which stage runs next from the stages done), answer
// extraction, majority votes, the arithmetic checker, and answer-quality
// statistics. It must not do I/O.

// Memory: long-term memory on an Ebbinghaus forgetting curve — episodes and
// reflections with strengths and recall times in SQLite (through Storage),
// recall that strengthens and a sweep that forgets. It must not know the index
// that searches it or the bus that reaches it.

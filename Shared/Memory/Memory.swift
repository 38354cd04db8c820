// Memory: long-term memory on an Ebbinghaus forgetting curve — episodes and
// reflections with strengths and recall times in SQLite (through Storage),
// recall that strengthens and a sweep that forgets — and the memory role's
// logic (MemoryService), which serves its requests. It must not know the bus
// that reaches it or which index searches it: that is a MemoryIndex it is given.

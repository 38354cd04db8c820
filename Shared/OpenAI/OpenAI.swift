// OpenAI: OpenAI's chat-completions format translated to and from Chorus — a
// chat request into a job or one role's stage payload, a finished job or stage
// into a completion, a job's events into streamed chunks. It must not serve
// HTTP or talk to the broker.

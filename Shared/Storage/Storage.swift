// Storage: Chorus's SQLite files (the broker's journal, the memory store, the
// index's items) through one small wrapper: a connection, prepared statements,
// transactions, rows read by type (`Row`, `RowDecodable`) and schemas as
// numbered steps (`Migrations`). It owns how a file is opened, written and
// upgraded; it must not know what any table means.

#pragma once
/// @file schema.hpp
/// The history database's schema, its versions and migrations, and opening a file safely
/// (docs/history.md "Schema" and "When the file is damaged").

#include <string>
#include <string_view>
#include <vector>

#include <tl/expected.hpp>

struct sqlite3;

namespace sonde::engine::history {

/// PRAGMA application_id of a sonde history database ("sond").
constexpr int application_id = 0x736f6e64;
/// PRAGMA user_version this sonde writes.
constexpr int schema_version = 2;

/// migrations()[k] takes a database from version k to k + 1 (SQL, run in one transaction).
const std::vector<std::string_view>& migrations();

/// Why a file could not be used.
struct open_error {
  enum kind_t {
    refused,  ///< another program's database, or a newer sonde's: left untouched
    retry,    ///< the file cannot be opened now (permissions, I/O): try again later
  } kind = retry;
  std::string message;
};

/// Open (creating if needed) the history database at `path` for writing: check it, set aside a
/// file that is not a usable database (renamed to `<path>.bad-<UTC time>` with its -wal and
/// -shm; what was done goes to `notes`), refuse a foreign or newer one, migrate an older one.
/// `synchronous_full`: PRAGMA synchronous=FULL, else NORMAL.
tl::expected<sqlite3*, open_error> open_for_writing(const std::string& path, bool synchronous_full,
                                                    std::vector<std::string>& notes);

/// Apply migrations to `db` (at version `from`) up to `to` (tests build older versions).
tl::expected<void, std::string> migrate(sqlite3* db, int from, int to);

/// sqlite3_errmsg with the path: "history.db: disk I/O error".
std::string db_error(sqlite3* db, const std::string& what);

}  // namespace sonde::engine::history

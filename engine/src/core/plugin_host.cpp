#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "core/engine_info.hpp"
#include "core/plugin_host.hpp"

namespace fs = std::filesystem;

namespace sonde::engine {

namespace {
std::string self_exe_dir() {
  std::error_code ec;
  auto p = fs::read_symlink("/proc/self/exe", ec);
  if (ec) return {};
  return p.parent_path().string();
}

bool valid_type_name(const char* n) {
  if (!n || !*n || std::strlen(n) > 63) return false;
  for (const char* c = n; *c; ++c)
    if (!(std::isalnum(static_cast<unsigned char>(*c)) || *c == '_' || *c == '-')) return false;
  return true;
}
}  // namespace

std::vector<plugin_dir> plugin_search_path(const std::vector<std::string>& cli_dirs,
                                           const std::vector<std::string>& config_dirs) {
  std::vector<plugin_dir> out;
  auto add = [&](const std::string& p, const char* origin) {
    if (p.empty()) return;
    for (auto& d : out)
      if (d.path == p) return;
    out.push_back({p, origin});
  };
  for (auto& d : cli_dirs) add(d, "--plugin-dir");
  if (const char* env = std::getenv("SONDE_PLUGIN_PATH")) {
    std::string s(env);
    std::size_t pos = 0;
    while (pos <= s.size()) {
      auto colon = s.find(':', pos);
      add(s.substr(pos, colon - pos), "SONDE_PLUGIN_PATH");
      if (colon == std::string::npos) break;
      pos = colon + 1;
    }
  }
  for (auto& d : config_dirs) add(d, "task file");
  add(install_plugin_dir(), "install");
  if (auto exe = self_exe_dir(); !exe.empty()) {
    std::error_code ec;
    auto p = fs::weakly_canonical(fs::path(exe) / ".." / "lib" / "sonde" / "plugins", ec);
    if (!ec) add(p.string(), "beside the binary");
  }
  return out;
}

void plugin_host::load_dirs(const std::vector<plugin_dir>& dirs) {
  for (const auto& d : dirs) {
    searched_.push_back(d);
    std::error_code ec;
    if (!fs::is_directory(d.path, ec)) continue;
    std::vector<fs::path> files;
    for (auto it = fs::directory_iterator(d.path, ec); !ec && it != fs::directory_iterator();
         it.increment(ec)) {
      auto name = it->path().filename().string();
      if (name.starts_with("sonde-") && name.ends_with(".so")) files.push_back(it->path());
    }
    std::sort(files.begin(), files.end());
    for (const auto& f : files) {
      auto base = f.filename().string();
      if (std::find(loaded_names_.begin(), loaded_names_.end(), base) != loaded_names_.end()) {
        shadowed_.push_back(f.string());
        continue;
      }
      if (load_file(f.string())) loaded_names_.push_back(base);
    }
  }
}

bool plugin_host::load_file(const std::string& path) {
  auto refuse = [&](std::string why) {
    problems_.push_back({path, "plugin " + path + " refused: " + why});
    return false;
  };
  if (plugins_.capacity() == 0) plugins_.reserve(256);
  if (plugins_.size() == plugins_.capacity()) return refuse("too many plugins (limit 256)");

  void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    const char* e = dlerror();
    return refuse(std::string("cannot load it as a shared object: ") + (e ? e : "unknown error"));
  }
  // Refused files stay mapped: unloading code that may have registered anything (static
  // constructors, ASIO services) is riskier than the memory.
  auto* abi = static_cast<const std::uint32_t*>(dlsym(h, SONDE_PLUGIN_ABI_SYMBOL));
  if (!abi) return refuse("not a sonde plugin (no '" SONDE_PLUGIN_ABI_SYMBOL "' symbol)");
  if (*abi != SONDE_PLUGIN_ABI_MAJOR)
    return refuse("built for plugin ABI " + std::to_string(*abi) + ", this engine speaks ABI " +
                  std::to_string(SONDE_PLUGIN_ABI_MAJOR));
  auto entry = reinterpret_cast<sonde_plugin_entry_fn>(dlsym(h, SONDE_PLUGIN_ENTRY_NAME));
  if (!entry) return refuse("no entry function '" SONDE_PLUGIN_ENTRY_NAME "'");
  const sonde_plugin_descriptor* d = entry();
  if (!d) return refuse("entry function returned no descriptor");
  if (d->abi_major != SONDE_PLUGIN_ABI_MAJOR)
    return refuse("descriptor says ABI " + std::to_string(d->abi_major) + ", expected " +
                  std::to_string(SONDE_PLUGIN_ABI_MAJOR));
  if (d->abi_minor > SONDE_PLUGIN_ABI_MINOR)
    return refuse("needs plugin ABI 1." + std::to_string(d->abi_minor) + ", this engine speaks 1." +
                  std::to_string(SONDE_PLUGIN_ABI_MINOR) + " (upgrade sonde)");
  if (d->struct_size < sizeof(sonde_plugin_descriptor))
    return refuse("descriptor is too small (" + std::to_string(d->struct_size) + " bytes)");
  const char* fp = engine_fingerprint();
  if (!d->fingerprint || std::strcmp(d->fingerprint, fp) != 0)
    return refuse(std::string("build fingerprint '") + (d->fingerprint ? d->fingerprint : "") +
                  "' should be '" + fp + "' (rebuild the plugin against this sonde)");
  if (!d->name || !d->types || d->type_count == 0 || d->type_count > 64)
    return refuse("descriptor has no name or no probe types");

  // Check every name before registering any, so a refused plugin leaves nothing behind.
  std::vector<std::pair<std::string, const sonde_probe_type*>> names;
  for (std::size_t i = 0; i < d->type_count; ++i) {
    const auto& t = d->types[i];
    if (!t.create || !t.run || !t.destroy) return refuse("probe type without functions");
    if (!valid_type_name(t.name)) return refuse("invalid probe type name");
    names.emplace_back(t.name, &t);
    for (std::size_t a = 0; a < t.alias_count; ++a) {
      if (!valid_type_name(t.aliases[a])) return refuse("invalid alias name");
      names.emplace_back(t.aliases[a], &t);
    }
  }
  for (std::size_t i = 0; i < names.size(); ++i) {
    for (std::size_t j = 0; j < i; ++j)
      if (names[i].first == names[j].first)
        return refuse("registers probe type '" + names[i].first + "' twice");
    if (auto* prev = find(names[i].first); prev && prev->name == names[i].first)
      return refuse("probe type '" + names[i].first + "' is already provided by " +
                    prev->plugin->path);
  }
  plugins_.push_back({path, d});
  for (auto& [n, t] : names) types_.push_back({n, t, &plugins_.back()});
  return true;
}

const probe_type_entry* plugin_host::find(std::string_view type) const {
  for (const auto& e : types_)
    if (e.name == type) return &e;
  // Seed compatibility: "PING", "HTTP", ... name the lower-case types.
  std::string lower(type);
  for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (lower != type)
    for (const auto& e : types_)
      if (e.name == lower) return &e;
  return nullptr;
}

std::vector<std::string> plugin_host::names() const {
  std::vector<std::string> out;
  for (const auto& e : types_) out.push_back(e.name);
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace sonde::engine

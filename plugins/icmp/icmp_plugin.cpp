// sonde-icmp.so: the icmp checker (alias ping) as a plugin.
#include <sonde/icmp.hpp>
#include <sonde/plugin_export.hpp>

SONDE_PLUGIN_EXPORT("icmp", "ICMP echo (ping) checks: round-trip times, loss and jitter",
                    sonde::plugin_type<sonde::icmp_probe>({"ping"}))

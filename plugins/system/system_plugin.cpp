// sonde-system.so: the system checker (host metrics from /proc and /sys) as a plugin.
#include <sonde/plugin_export.hpp>
#include <sonde/system.hpp>

SONDE_PLUGIN_EXPORT("system",
                    "Host metrics from /proc and /sys: CPU, memory, load, network, disks, "
                    "file systems",
                    sonde::plugin_type<sonde::system_probe>())

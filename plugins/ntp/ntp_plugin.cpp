// sonde-ntp.so: the ntp checker as a plugin.
#include <sonde/ntp.hpp>
#include <sonde/plugin_export.hpp>

SONDE_PLUGIN_EXPORT("ntp", "NTP server checks (SNTP): offset, delay, stratum, kiss-o'-death",
                    sonde::plugin_type<sonde::ntp_probe>())

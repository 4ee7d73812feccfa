/*
 * tzwin.c — Windows zone ids and Outlook display names to IANA zones.
 *
 * Written from the CLDR windowsZones.xml "001" (golden zone) mapping and the
 * "Display" strings of the Windows time-zone registry that Outlook puts in
 * TZID parameters. IANA names are the current canonical ones; where the
 * name changed recently the older one follows as a fallback candidate.
 */
#include "tzwin.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct tzwin_row {
    const char *id;         /* Windows zone id (registry key name) */
    const char *iana;       /* candidates, space separated, newest first */
    const char *display[3]; /* display names without the "(UTC+hh:mm)" prefix */
};

static const struct tzwin_row tzwin_rows[] = {
    {"Dateline Standard Time", "Etc/GMT+12", {"International Date Line West"}},
    {"UTC-11", "Etc/GMT+11", {"Coordinated Universal Time-11"}},
    {"Aleutian Standard Time", "America/Adak", {"Aleutian Islands"}},
    {"Hawaiian Standard Time", "Pacific/Honolulu", {"Hawaii"}},
    {"Marquesas Standard Time", "Pacific/Marquesas", {"Marquesas Islands"}},
    {"Alaskan Standard Time", "America/Anchorage", {"Alaska"}},
    {"UTC-09", "Etc/GMT+9", {"Coordinated Universal Time-09"}},
    {"Pacific Standard Time (Mexico)",
     "America/Tijuana",
     {"Baja California", "Tijuana, Baja California"}},
    {"UTC-08", "Etc/GMT+8", {"Coordinated Universal Time-08"}},
    {"Pacific Standard Time",
     "America/Los_Angeles",
     {"Pacific Time (US & Canada)", "Pacific Time (US & Canada); Tijuana"}},
    {"US Mountain Standard Time", "America/Phoenix", {"Arizona"}},
    {"Mountain Standard Time (Mexico)",
     "America/Mazatlan",
     {"La Paz, Mazatlan", "Chihuahua, La Paz, Mazatlan"}},
    {"Mexico Standard Time 2", "America/Chihuahua", {"Chihuahua, La Paz, Mazatlan - Old"}},
    {"Mountain Standard Time", "America/Denver", {"Mountain Time (US & Canada)"}},
    {"Yukon Standard Time", "America/Whitehorse", {"Yukon"}},
    {"Central America Standard Time", "America/Guatemala", {"Central America"}},
    {"Central Standard Time", "America/Chicago", {"Central Time (US & Canada)"}},
    {"Easter Island Standard Time", "Pacific/Easter", {"Easter Island"}},
    {"Central Standard Time (Mexico)",
     "America/Mexico_City",
     {"Guadalajara, Mexico City, Monterrey"}},
    {"Mexico Standard Time", "America/Mexico_City", {"Guadalajara, Mexico City, Monterrey - Old"}},
    {"Canada Central Standard Time", "America/Regina", {"Saskatchewan"}},
    {"SA Pacific Standard Time",
     "America/Bogota",
     {"Bogota, Lima, Quito, Rio Branco", "Bogota, Lima, Quito"}},
    {"Eastern Standard Time (Mexico)", "America/Cancun", {"Chetumal"}},
    {"Eastern Standard Time", "America/New_York", {"Eastern Time (US & Canada)"}},
    {"Haiti Standard Time", "America/Port-au-Prince", {"Haiti"}},
    {"Cuba Standard Time", "America/Havana", {"Havana"}},
    {"US Eastern Standard Time",
     "America/Indiana/Indianapolis America/Indianapolis",
     {"Indiana (East)"}},
    {"Turks And Caicos Standard Time", "America/Grand_Turk", {"Turks and Caicos"}},
    {"Paraguay Standard Time", "America/Asuncion", {"Asuncion"}},
    {"Atlantic Standard Time", "America/Halifax", {"Atlantic Time (Canada)"}},
    {"Venezuela Standard Time", "America/Caracas", {"Caracas"}},
    {"Central Brazilian Standard Time", "America/Cuiaba", {"Cuiaba", "Manaus"}},
    {"SA Western Standard Time",
     "America/La_Paz",
     {"Georgetown, La Paz, Manaus, San Juan", "Georgetown, La Paz, San Juan"}},
    {"Pacific SA Standard Time", "America/Santiago", {"Santiago"}},
    {"Newfoundland Standard Time", "America/St_Johns", {"Newfoundland"}},
    {"Tocantins Standard Time", "America/Araguaina", {"Araguaina"}},
    {"E. South America Standard Time", "America/Sao_Paulo", {"Brasilia"}},
    {"SA Eastern Standard Time", "America/Cayenne", {"Cayenne, Fortaleza"}},
    {"Argentina Standard Time",
     "America/Argentina/Buenos_Aires America/Buenos_Aires",
     {"City of Buenos Aires", "Buenos Aires"}},
    {"Greenland Standard Time", "America/Nuuk America/Godthab", {"Greenland"}},
    {"Montevideo Standard Time", "America/Montevideo", {"Montevideo"}},
    {"Magallanes Standard Time", "America/Punta_Arenas", {"Punta Arenas"}},
    {"Saint Pierre Standard Time", "America/Miquelon", {"Saint Pierre and Miquelon"}},
    {"Bahia Standard Time", "America/Bahia", {"Salvador"}},
    {"UTC-02", "Etc/GMT+2", {"Coordinated Universal Time-02"}},
    {"Mid-Atlantic Standard Time", "Etc/GMT+2", {"Mid-Atlantic - Old", "Mid-Atlantic"}},
    {"Azores Standard Time", "Atlantic/Azores", {"Azores"}},
    {"Cape Verde Standard Time", "Atlantic/Cape_Verde", {"Cabo Verde Is.", "Cape Verde Is."}},
    {"UTC", "Etc/UTC", {"Coordinated Universal Time"}},
    {"GMT Standard Time",
     "Europe/London",
     {"Dublin, Edinburgh, Lisbon, London", "Greenwich Mean Time : Dublin, Edinburgh, Lisbon, "
                                           "London"}},
    {"Greenwich Standard Time",
     "Atlantic/Reykjavik",
     {"Monrovia, Reykjavik", "Casablanca, Monrovia, Reykjavik"}},
    {"Sao Tome Standard Time", "Africa/Sao_Tome", {"Sao Tome"}},
    {"Morocco Standard Time", "Africa/Casablanca", {"Casablanca"}},
    {"W. Europe Standard Time",
     "Europe/Berlin",
     {"Amsterdam, Berlin, Bern, Rome, Stockholm, Vienna"}},
    {"Central Europe Standard Time",
     "Europe/Budapest",
     {"Belgrade, Bratislava, Budapest, Ljubljana, Prague"}},
    {"Romance Standard Time", "Europe/Paris", {"Brussels, Copenhagen, Madrid, Paris"}},
    {"Central European Standard Time", "Europe/Warsaw", {"Sarajevo, Skopje, Warsaw, Zagreb"}},
    {"W. Central Africa Standard Time", "Africa/Lagos", {"West Central Africa"}},
    {"Jordan Standard Time", "Asia/Amman", {"Amman"}},
    {"GTB Standard Time", "Europe/Bucharest", {"Athens, Bucharest", "Athens, Bucharest, Istanbul"}},
    {"Middle East Standard Time", "Asia/Beirut", {"Beirut"}},
    {"Egypt Standard Time", "Africa/Cairo", {"Cairo"}},
    {"E. Europe Standard Time", "Europe/Chisinau", {"Chisinau", "E. Europe"}},
    {"Syria Standard Time", "Asia/Damascus", {"Damascus"}},
    {"West Bank Standard Time", "Asia/Hebron", {"Gaza, Hebron"}},
    {"South Africa Standard Time", "Africa/Johannesburg", {"Harare, Pretoria"}},
    {"FLE Standard Time",
     "Europe/Kyiv Europe/Kiev",
     {"Helsinki, Kyiv, Riga, Sofia, Tallinn, Vilnius",
      "Helsinki, Kiev, Riga, Sofia, Tallinn, Vilnius"}},
    {"Israel Standard Time", "Asia/Jerusalem", {"Jerusalem"}},
    {"South Sudan Standard Time", "Africa/Juba", {"Juba"}},
    {"Kaliningrad Standard Time", "Europe/Kaliningrad", {"Kaliningrad"}},
    {"Sudan Standard Time", "Africa/Khartoum", {"Khartoum"}},
    {"Libya Standard Time", "Africa/Tripoli", {"Tripoli"}},
    {"Namibia Standard Time", "Africa/Windhoek", {"Windhoek"}},
    {"Arabic Standard Time", "Asia/Baghdad", {"Baghdad"}},
    {"Turkey Standard Time", "Europe/Istanbul", {"Istanbul"}},
    {"Arab Standard Time", "Asia/Riyadh", {"Kuwait, Riyadh"}},
    {"Belarus Standard Time", "Europe/Minsk", {"Minsk"}},
    {"Russian Standard Time",
     "Europe/Moscow",
     {"Moscow, St. Petersburg", "Moscow, St. Petersburg, Volgograd"}},
    {"E. Africa Standard Time", "Africa/Nairobi", {"Nairobi"}},
    {"Volgograd Standard Time", "Europe/Volgograd", {"Volgograd"}},
    {"Iran Standard Time", "Asia/Tehran", {"Tehran"}},
    {"Arabian Standard Time", "Asia/Dubai", {"Abu Dhabi, Muscat"}},
    {"Astrakhan Standard Time", "Europe/Astrakhan", {"Astrakhan, Ulyanovsk"}},
    {"Azerbaijan Standard Time", "Asia/Baku", {"Baku"}},
    {"Russia Time Zone 3", "Europe/Samara", {"Izhevsk, Samara"}},
    {"Mauritius Standard Time", "Indian/Mauritius", {"Port Louis"}},
    {"Saratov Standard Time", "Europe/Saratov", {"Saratov"}},
    {"Georgian Standard Time", "Asia/Tbilisi", {"Tbilisi"}},
    {"Caucasus Standard Time", "Asia/Yerevan", {"Yerevan"}},
    {"Armenian Standard Time", "Asia/Yerevan", {"Yerevan - Old"}},
    {"Afghanistan Standard Time", "Asia/Kabul", {"Kabul"}},
    {"West Asia Standard Time", "Asia/Tashkent", {"Ashgabat, Tashkent", "Tashkent"}},
    {"Ekaterinburg Standard Time", "Asia/Yekaterinburg", {"Ekaterinburg"}},
    {"Pakistan Standard Time", "Asia/Karachi", {"Islamabad, Karachi"}},
    {"Qyzylorda Standard Time", "Asia/Qyzylorda", {"Qyzylorda"}},
    {"India Standard Time", "Asia/Kolkata Asia/Calcutta", {"Chennai, Kolkata, Mumbai, New Delhi"}},
    {"Sri Lanka Standard Time", "Asia/Colombo", {"Sri Jayawardenepura"}},
    {"Nepal Standard Time", "Asia/Kathmandu Asia/Katmandu", {"Kathmandu"}},
    {"Central Asia Standard Time", "Asia/Bishkek", {"Astana", "Bishkek"}},
    {"Bangladesh Standard Time", "Asia/Dhaka", {"Dhaka"}},
    {"Omsk Standard Time", "Asia/Omsk", {"Omsk"}},
    {"Myanmar Standard Time", "Asia/Yangon Asia/Rangoon", {"Yangon (Rangoon)"}},
    {"SE Asia Standard Time", "Asia/Bangkok", {"Bangkok, Hanoi, Jakarta"}},
    {"Altai Standard Time", "Asia/Barnaul", {"Barnaul, Gorno-Altaysk"}},
    {"W. Mongolia Standard Time", "Asia/Hovd", {"Hovd"}},
    {"North Asia Standard Time", "Asia/Krasnoyarsk", {"Krasnoyarsk"}},
    {"N. Central Asia Standard Time", "Asia/Novosibirsk", {"Novosibirsk"}},
    {"Tomsk Standard Time", "Asia/Tomsk", {"Tomsk"}},
    {"China Standard Time", "Asia/Shanghai", {"Beijing, Chongqing, Hong Kong, Urumqi"}},
    {"North Asia East Standard Time", "Asia/Irkutsk", {"Irkutsk"}},
    {"Singapore Standard Time", "Asia/Singapore", {"Kuala Lumpur, Singapore"}},
    {"W. Australia Standard Time", "Australia/Perth", {"Perth"}},
    {"Taipei Standard Time", "Asia/Taipei", {"Taipei"}},
    {"Ulaanbaatar Standard Time", "Asia/Ulaanbaatar", {"Ulaanbaatar"}},
    {"Aus Central W. Standard Time", "Australia/Eucla", {"Eucla"}},
    {"Transbaikal Standard Time", "Asia/Chita", {"Chita"}},
    {"Tokyo Standard Time", "Asia/Tokyo", {"Osaka, Sapporo, Tokyo"}},
    {"North Korea Standard Time", "Asia/Pyongyang", {"Pyongyang"}},
    {"Korea Standard Time", "Asia/Seoul", {"Seoul"}},
    {"Yakutsk Standard Time", "Asia/Yakutsk", {"Yakutsk"}},
    {"Cen. Australia Standard Time", "Australia/Adelaide", {"Adelaide"}},
    {"AUS Central Standard Time", "Australia/Darwin", {"Darwin"}},
    {"E. Australia Standard Time", "Australia/Brisbane", {"Brisbane"}},
    {"AUS Eastern Standard Time", "Australia/Sydney", {"Canberra, Melbourne, Sydney"}},
    {"West Pacific Standard Time", "Pacific/Port_Moresby", {"Guam, Port Moresby"}},
    {"Tasmania Standard Time", "Australia/Hobart", {"Hobart"}},
    {"Vladivostok Standard Time", "Asia/Vladivostok", {"Vladivostok"}},
    {"Lord Howe Standard Time", "Australia/Lord_Howe", {"Lord Howe Island"}},
    {"Bougainville Standard Time", "Pacific/Bougainville", {"Bougainville Island"}},
    {"Russia Time Zone 10", "Asia/Srednekolymsk", {"Chokurdakh"}},
    {"Magadan Standard Time", "Asia/Magadan", {"Magadan"}},
    {"Norfolk Standard Time", "Pacific/Norfolk", {"Norfolk Island"}},
    {"Sakhalin Standard Time", "Asia/Sakhalin", {"Sakhalin"}},
    {"Central Pacific Standard Time", "Pacific/Guadalcanal", {"Solomon Is., New Caledonia"}},
    {"Russia Time Zone 11", "Asia/Kamchatka", {"Anadyr, Petropavlovsk-Kamchatsky"}},
    {"New Zealand Standard Time", "Pacific/Auckland", {"Auckland, Wellington"}},
    {"UTC+12", "Etc/GMT-12", {"Coordinated Universal Time+12"}},
    {"Fiji Standard Time", "Pacific/Fiji", {"Fiji", "Fiji, Kamchatka, Marshall Is."}},
    {"Kamchatka Standard Time", "Asia/Kamchatka", {"Petropavlovsk-Kamchatsky - Old"}},
    {"Chatham Islands Standard Time", "Pacific/Chatham", {"Chatham Islands"}},
    {"UTC+13", "Etc/GMT-13", {"Coordinated Universal Time+13"}},
    {"Tonga Standard Time", "Pacific/Tongatapu", {"Nuku'alofa"}},
    {"Samoa Standard Time", "Pacific/Apia", {"Samoa"}},
    {"Line Islands Standard Time", "Pacific/Kiritimati", {"Kiritimati Island"}},
};

#define TZWIN_ROWS (sizeof tzwin_rows / sizeof tzwin_rows[0])
#define TZWIN_KEY 128

struct tzwin_entry {
    char key[TZWIN_KEY];
    const char *iana;
};

static struct tzwin_entry tzwin_index[TZWIN_ROWS * 4];
static size_t tzwin_nindex;
static pthread_once_t tzwin_once = PTHREAD_ONCE_INIT;

/*
 * Lower-cases and keeps only letters, digits, '+' and '-', so that
 * "Amsterdam, Berlin" and "Amsterdam / Berlin" compare equal while
 * "UTC-11" and "UTC+11" stay apart. Returns the key length, or 0 when the
 * key does not fit (no table key is that long).
 */
static size_t tzwin_key(const char *s, size_t n, char out[TZWIN_KEY])
{
    size_t k = 0;
    for (size_t i = 0; i < n && s[i]; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c - 'A' + 'a');
        if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '-') {
            if (k + 1 >= TZWIN_KEY)
                return 0;
            out[k++] = (char)c;
        }
    }
    out[k] = '\0';
    return k;
}

static int tzwin_cmp(const void *a, const void *b)
{
    return strcmp(((const struct tzwin_entry *)a)->key, ((const struct tzwin_entry *)b)->key);
}

static void tzwin_add(const char *name, const char *iana)
{
    struct tzwin_entry *e = &tzwin_index[tzwin_nindex];
    if (tzwin_key(name, strlen(name), e->key) == 0)
        return;
    e->iana = iana;
    tzwin_nindex++;
}

static void tzwin_build(void)
{
    for (size_t i = 0; i < TZWIN_ROWS; i++) {
        tzwin_add(tzwin_rows[i].id, tzwin_rows[i].iana);
        for (size_t j = 0; j < 3 && tzwin_rows[i].display[j]; j++)
            tzwin_add(tzwin_rows[i].display[j], tzwin_rows[i].iana);
    }
    qsort(tzwin_index, tzwin_nindex, sizeof tzwin_index[0], tzwin_cmp);
}

void tzwin_init(void)
{
    pthread_once(&tzwin_once, tzwin_build);
}

static const char *tzwin_find(const char *s, size_t n)
{
    struct tzwin_entry k;
    if (tzwin_key(s, n, k.key) == 0)
        return NULL;
    const struct tzwin_entry *e =
        bsearch(&k, tzwin_index, tzwin_nindex, sizeof tzwin_index[0], tzwin_cmp);
    return e ? e->iana : NULL;
}

const char *tzwin_to_iana(const char *name)
{
    tzwin_init();
    if (!name)
        return NULL;
    while (*name == ' ' || *name == '\t' || *name == '"')
        name++;
    size_t n = strlen(name);
    while (n > 0 && (name[n - 1] == ' ' || name[n - 1] == '\t' || name[n - 1] == '"'))
        n--;

    /* Outlook display name: "(UTC+01:00) ..." or "(GMT+01.00) ...". The
     * offset in parentheses is ignored: Windows updates it when a country
     * changes its offset (Jordan, Kazakhstan) and old mail keeps the old one. */
    if (n > 4 && name[0] == '(' &&
        (strncmp(name + 1, "UTC", 3) == 0 || strncmp(name + 1, "GMT", 3) == 0)) {
        const char *close = memchr(name, ')', n);
        if (close) {
            size_t skip = (size_t)(close + 1 - name);
            const char *r = tzwin_find(close + 1, n - skip);
            if (r)
                return r;
        }
    }
    const char *r = tzwin_find(name, n);
    if (r)
        return r;

    /* Numbered copies Outlook makes of a zone: "W. Europe Standard Time 1". */
    size_t m = n;
    while (m > 0 && name[m - 1] >= '0' && name[m - 1] <= '9')
        m--;
    if (m < n && m > 1 && name[m - 1] == ' ')
        return tzwin_find(name, m - 1);
    return NULL;
}

size_t tzwin_count(void)
{
    return TZWIN_ROWS;
}

const char *tzwin_id(size_t i)
{
    return i < TZWIN_ROWS ? tzwin_rows[i].id : NULL;
}

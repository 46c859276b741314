#compdef mailmerge

autoload -U is-at-least

_mailmerge() {
    typeset -A opt_args
    typeset -a _arguments_options
    local ret=1

    if is-at-least 5.2; then
        _arguments_options=(-s -S -C)
    else
        _arguments_options=(-s -C)
    fi

    local context curcontext="$curcontext" state line
    _arguments "${_arguments_options[@]}" : \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
'-V[Print version]' \
'--version[Print version]' \
":: :_mailmerge_commands" \
"*::: :->mailmerge" \
&& ret=0
    case $state in
    (mailmerge)
        words=($line[1] "${words[@]}")
        (( CURRENT += 1 ))
        curcontext="${curcontext%:*:*}:mailmerge-command-$line[1]:"
        case $line[1] in
            (run)
_arguments "${_arguments_options[@]}" : \
'--results=[Results CSV \[default\: <RECIPIENTS stem>.results.csv beside the input\]]:PATH:_files' \
'--dns=[Use this DNS server (IP\:PORT) instead of the system resolver (/etc/resolv.conf)]:IP:PORT:_default' \
'--dns-timeout=[DNS query timeout]:DURATION:_default' \
'--from=[Envelope sender (MAIL FROM) \[default\: the address in the rendered From header\]]:ADDRESS:_default' \
'--email-column=[Column holding the recipient address]:NAME:_default' \
'--max-field-size=[Largest CSV field accepted (bytes, or with K, M, G); a row with a longer one is \`invalid\`]:SIZE:_default' \
'--helo=[Name sent in EHLO \[default\: this host'\''s FQDN; mailmerge.sandbox.test with --sandbox\]]:NAME:_default' \
'--smtp-port=[TCP port used when connecting to MX hosts]:PORT:_default' \
'--connections-per-site=[Simultaneous connections at most per destination site (domains sharing MX hosts)]:N:_default' \
'--max-connections=[Simultaneous connections at most in total]:N:_default' \
'--messages-per-connection=[Messages sent over one connection before it is closed and a new one opened]:N:_default' \
'--retry=[Waits before the 2nd, 3rd, 4th… attempt after a transient failure (ms, s, m, h; \`none\` never retries) \[1s with --sandbox\]]:LIST:_default' \
'--deadline=[Wall-clock budget of the whole run; what is not delivered by then is \`deferred\`]:DURATION:_default' \
'--tls=[STARTTLS\: opportunistic (any certificate, plaintext fallback), required (verified certificate matching the MX name, else deferred) or disabled]:MODE:((opportunistic\:"Use TLS whenever offered, accept any certificate; fall back to plaintext when the handshake fails"
required\:"Verified TLS or no delivery (the message is deferred)"
disabled\:"Never STARTTLS"))' \
'--rate-per-site=[Messages at most per site and period, spaced evenly (e.g. 100/min, 5/s)]:N/PERIOD:_default' \
'*--source-ip=[Local address new connections leave from, with the EHLO name its PTR record gives \[default HELO\: --helo\]; repeat for a pool (each new connection takes the least-used address; one that cannot be bound is skipped for the run). See docs/scaling.md]:ADDR[=HELO]:_default' \
'--daily-cap=[Messages at most per provider per day (UTC), counted across runs; the rest end \`deferred\` (step \`cap\`) and a later day'\''s run sends them]:N:_default' \
'--warmup=[Warm-up schedule, DAY=CAP,... (day 1 = the first day of sending)\: the daily cap per provider while the sending IP warms up (the config'\''s \`\[warmup\]\` table)]:SCHEDULE:_default' \
'*--provider=[A mailbox provider, changed or added (the config'\''s \`\[provider.NAME\]\` tables), as a TOML inline table'\''s inside\: \`name = "acme", mx_suffixes = \["mx.acme.example"\], connections = 2\`]:TABLE:_default' \
'*--backoff=[A backoff rule (the config'\''s \`\[\[backoff\]\]\` tables), as a TOML inline table'\''s inside\: \`pattern = "\[TS03\]", provider = "yahoo", rate = "10/min", duration = "30m"\`]:TABLE:_default' \
'--smtp-timeout=[Bound every SMTP phase by this timeout \[default\: RFC 5321 §4.5.3.2 values, 30 s connect\]]:DURATION:_default' \
'--connect-timeout=[TCP connect timeout per MX address (applied after --smtp-timeout) \[default\: 30s\]]:DURATION:_default' \
'*--timeout=[One phase'\''s timeout, PHASE=DURATION (connect, greeting, command, mail, rcpt, data, data-block, data-end); may be repeated; applied last]:PHASE=DURATION:_default' \
'--tls-policy=[Published TLS policies\: auto (honor MTA-STS and DANE, else --tls) or opportunistic (--tls everywhere, no policy lookups). See docs/delivery.md#tls-policies]:MODE:((auto\:"Honor MTA-STS and DANE where a receiver publishes them; \`--tls\` elsewhere"
opportunistic\:"Ignore published policies\: \`--tls\` everywhere (no policy lookups)"))' \
'*--tls-ca=[PEM file of extra trusted root certificates (a private PKI) for verified TLS (MTA-STS, --tls required) and for fetching MTA-STS policies; repeatable]:FILE:_files' \
'--dnssec-trust-anchor=[DNSSEC trust anchor for DANE instead of the IANA root keys\: a file of DS or DNSKEY records in zone-file form (a private test root)]:FILE:_files' \
'--mta-sts-cache=[MTA-STS policy cache, kept between runs for each policy'\''s max_age \[default\: \$XDG_CACHE_HOME/mailmerge/mta-sts.json, else ~/.cache/...; with --sandbox <--sandbox-dir>.mta-sts.json\]]:PATH:_files' \
'--mta-sts-port=[HTTPS port MTA-STS policies are fetched from (tests)]:PORT:_default' \
'--attachments-dir=[Folder that \`Attachment\:\` files are read from; a value naming anything outside it (absolute, \`..\`, a symlink out) makes the row invalid \[default\: the template'\''s folder\]]:DIR:_files -/' \
'--max-message-size=[Largest message built, attachments included (bytes, or with K, M, G); a row whose message is larger is \`invalid\`]:SIZE:_default' \
'--out=[With --dry-run / check\: write every rendered message to DIR as <row>-<address>.eml]:DIR:_files -/' \
'--limit=[Send at most N messages (a canary); the rest stay \`deferred\` (step \`limit\`) and a re-run of the same command continues with the next ones]:N:_default' \
'--shard=[Send (or with check, plan) only shard I of N\: the rows whose destination site hashes to I, so each destination stays in one shard. \`auto/N\` takes I from JOB_COMPLETION_INDEX (Kubernetes Indexed Jobs). Results go to <RECIPIENTS stem>.results.shard-I-of-N.csv unless --results is given; join them with merge-results (docs/scaling.md)]:I/N:_default' \
'--report=[When the run ends, write an HTML report of its results (docs/results.md#the-html-report) to PATH \[default\: <results stem>.html beside the results; --sandbox writes it anyway\]]::PATH:_files' \
'--events=[Write the run'\''s events as JSON Lines to PATH (\`-\`\: standard output, and the summary goes to standard error)\: every attempt'\''s outcome, provider state changes, a summary]:PATH:_files' \
'--sandbox-dir=[Where --sandbox stores received messages]:DIR:_files -/' \
'--config=[Config file of default options \[default\: ./mailmerge.toml if present\]]:PATH:_files' \
'--dkim-key=[DKIM-sign every message with this PEM private key (RSA 2048+ or Ed25519)]:PEM:_files' \
'--dkim-selector=[DKIM selector\: the key is published at <SELECTOR>._domainkey.<DOMAIN>]:SELECTOR:_default' \
'--dkim-domain=[DKIM signing domain (d=) \[default\: each message'\''s From domain\]]:DOMAIN:_default' \
'*--list-unsubscribe=[Add List-Unsubscribe with this URI (templated per row, e.g. https\://acme.example/u/{{token}}); repeat for a mailto\: URI. An https URI also adds List-Unsubscribe-Post\: List-Unsubscribe=One-Click (RFC 8058)]:URI:_default' \
'--suppressions=[Suppression list (SQLite; shared safely by runs at once) \[default\: \$XDG_DATA_HOME/mailmerge/suppressions.sqlite, else ~/.local/share/...; with --sandbox <--sandbox-dir>.suppressions.sqlite\]]:PATH:_files' \
'--return-path=[Envelope sender (MAIL FROM) with a signed per-row token, so that a late bounce finds its row\: e.g. '\''bounces+{token}@acme.example'\'' (needs --verp-key). Overrides --from]:ADDRESS:_default' \
'--verp-key=[Secret key signing the --return-path tokens (HMAC-SHA256); keep it in the config file or use --verp-key-file]:KEY:_default' \
'--verp-key-file=[File holding the VERP key (surrounding white space ignored)]:PATH:_files' \
'--state=[The sender'\''s memory\: suspensions, learnt limits and daily counts per provider and source IP, shared by every run (SQLite) \[default\: \$XDG_DATA_HOME/mailmerge/ senders.sqlite, else ~/.local/share/...; with --sandbox <--sandbox-dir>.senders.sqlite\]]:PATH:_files' \
'--now=[Read the wall clock as this RFC 3339 instant at start (tests; days and suspensions)]:RFC3339:_default' \
'--no-private-mx[For domains under public names, never connect to MX addresses in private, loopback, link-local or shared ranges (a domain left with none bounces, 5.4.4)]' \
'--allow-duplicates[Send to repeated addresses too (default\: first row only; others are \`duplicate\`)]' \
'--no-chunking[Never use BDAT (RFC 3030 CHUNKING), even where offered\: send every message with DATA (a receiver whose CHUNKING is broken)]' \
'--dry-run[Render, resolve and print the delivery plan without connecting to any MX (= \`check\`)]' \
'--fresh[Forget earlier runs of this job (empty the journal) and send to every row again]' \
'--template-changed[The template changed since the journal was started (a fix during a campaign)\: go on with the journal instead of refusing; rows already delivered are not sent again]' \
'--journal-repair[A damaged journal record stops the run (exit 2); with this flag damaged records are skipped and their rows sent again]' \
'--no-received-header[Leave out the \`Received\:\` trace header that records the submission (list file, HELO name, run id and time) at the top of every message]' \
'--raw-csv[Write results cells exactly as they are. By default a cell that a spreadsheet would run as a formula (starting with =, +, -, @, tab or CR) gets a leading apostrophe]' \
'--timings[At the end, print to standard error how long each stage took and when the first SMTP session opened (where start-up time goes)]' \
'--sandbox[Run the whole job against an embedded loopback DNS server and SMTP receiver]' \
'-q[No progress output (errors still go to stderr)]' \
'--quiet[No progress output (errors still go to stderr)]' \
'--ignore-suppressions[Send to suppressed addresses too (transactional mail\: receipts, password resets); hard bounces are still recorded]' \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
':recipients -- CSV file with a header row; one recipient per row:_files' \
':template -- Template\: header block, blank line, body (see docs/templates.md):_files' \
&& ret=0
;;
(check)
_arguments "${_arguments_options[@]}" : \
'--results=[Results CSV \[default\: <RECIPIENTS stem>.results.csv beside the input\]]:PATH:_files' \
'--dns=[Use this DNS server (IP\:PORT) instead of the system resolver (/etc/resolv.conf)]:IP:PORT:_default' \
'--dns-timeout=[DNS query timeout]:DURATION:_default' \
'--from=[Envelope sender (MAIL FROM) \[default\: the address in the rendered From header\]]:ADDRESS:_default' \
'--email-column=[Column holding the recipient address]:NAME:_default' \
'--max-field-size=[Largest CSV field accepted (bytes, or with K, M, G); a row with a longer one is \`invalid\`]:SIZE:_default' \
'--helo=[Name sent in EHLO \[default\: this host'\''s FQDN; mailmerge.sandbox.test with --sandbox\]]:NAME:_default' \
'--smtp-port=[TCP port used when connecting to MX hosts]:PORT:_default' \
'--connections-per-site=[Simultaneous connections at most per destination site (domains sharing MX hosts)]:N:_default' \
'--max-connections=[Simultaneous connections at most in total]:N:_default' \
'--messages-per-connection=[Messages sent over one connection before it is closed and a new one opened]:N:_default' \
'--retry=[Waits before the 2nd, 3rd, 4th… attempt after a transient failure (ms, s, m, h; \`none\` never retries) \[1s with --sandbox\]]:LIST:_default' \
'--deadline=[Wall-clock budget of the whole run; what is not delivered by then is \`deferred\`]:DURATION:_default' \
'--tls=[STARTTLS\: opportunistic (any certificate, plaintext fallback), required (verified certificate matching the MX name, else deferred) or disabled]:MODE:((opportunistic\:"Use TLS whenever offered, accept any certificate; fall back to plaintext when the handshake fails"
required\:"Verified TLS or no delivery (the message is deferred)"
disabled\:"Never STARTTLS"))' \
'--rate-per-site=[Messages at most per site and period, spaced evenly (e.g. 100/min, 5/s)]:N/PERIOD:_default' \
'*--source-ip=[Local address new connections leave from, with the EHLO name its PTR record gives \[default HELO\: --helo\]; repeat for a pool (each new connection takes the least-used address; one that cannot be bound is skipped for the run). See docs/scaling.md]:ADDR[=HELO]:_default' \
'--daily-cap=[Messages at most per provider per day (UTC), counted across runs; the rest end \`deferred\` (step \`cap\`) and a later day'\''s run sends them]:N:_default' \
'--warmup=[Warm-up schedule, DAY=CAP,... (day 1 = the first day of sending)\: the daily cap per provider while the sending IP warms up (the config'\''s \`\[warmup\]\` table)]:SCHEDULE:_default' \
'*--provider=[A mailbox provider, changed or added (the config'\''s \`\[provider.NAME\]\` tables), as a TOML inline table'\''s inside\: \`name = "acme", mx_suffixes = \["mx.acme.example"\], connections = 2\`]:TABLE:_default' \
'*--backoff=[A backoff rule (the config'\''s \`\[\[backoff\]\]\` tables), as a TOML inline table'\''s inside\: \`pattern = "\[TS03\]", provider = "yahoo", rate = "10/min", duration = "30m"\`]:TABLE:_default' \
'--smtp-timeout=[Bound every SMTP phase by this timeout \[default\: RFC 5321 §4.5.3.2 values, 30 s connect\]]:DURATION:_default' \
'--connect-timeout=[TCP connect timeout per MX address (applied after --smtp-timeout) \[default\: 30s\]]:DURATION:_default' \
'*--timeout=[One phase'\''s timeout, PHASE=DURATION (connect, greeting, command, mail, rcpt, data, data-block, data-end); may be repeated; applied last]:PHASE=DURATION:_default' \
'--tls-policy=[Published TLS policies\: auto (honor MTA-STS and DANE, else --tls) or opportunistic (--tls everywhere, no policy lookups). See docs/delivery.md#tls-policies]:MODE:((auto\:"Honor MTA-STS and DANE where a receiver publishes them; \`--tls\` elsewhere"
opportunistic\:"Ignore published policies\: \`--tls\` everywhere (no policy lookups)"))' \
'*--tls-ca=[PEM file of extra trusted root certificates (a private PKI) for verified TLS (MTA-STS, --tls required) and for fetching MTA-STS policies; repeatable]:FILE:_files' \
'--dnssec-trust-anchor=[DNSSEC trust anchor for DANE instead of the IANA root keys\: a file of DS or DNSKEY records in zone-file form (a private test root)]:FILE:_files' \
'--mta-sts-cache=[MTA-STS policy cache, kept between runs for each policy'\''s max_age \[default\: \$XDG_CACHE_HOME/mailmerge/mta-sts.json, else ~/.cache/...; with --sandbox <--sandbox-dir>.mta-sts.json\]]:PATH:_files' \
'--mta-sts-port=[HTTPS port MTA-STS policies are fetched from (tests)]:PORT:_default' \
'--attachments-dir=[Folder that \`Attachment\:\` files are read from; a value naming anything outside it (absolute, \`..\`, a symlink out) makes the row invalid \[default\: the template'\''s folder\]]:DIR:_files -/' \
'--max-message-size=[Largest message built, attachments included (bytes, or with K, M, G); a row whose message is larger is \`invalid\`]:SIZE:_default' \
'--out=[With --dry-run / check\: write every rendered message to DIR as <row>-<address>.eml]:DIR:_files -/' \
'--limit=[Send at most N messages (a canary); the rest stay \`deferred\` (step \`limit\`) and a re-run of the same command continues with the next ones]:N:_default' \
'--shard=[Send (or with check, plan) only shard I of N\: the rows whose destination site hashes to I, so each destination stays in one shard. \`auto/N\` takes I from JOB_COMPLETION_INDEX (Kubernetes Indexed Jobs). Results go to <RECIPIENTS stem>.results.shard-I-of-N.csv unless --results is given; join them with merge-results (docs/scaling.md)]:I/N:_default' \
'--report=[When the run ends, write an HTML report of its results (docs/results.md#the-html-report) to PATH \[default\: <results stem>.html beside the results; --sandbox writes it anyway\]]::PATH:_files' \
'--events=[Write the run'\''s events as JSON Lines to PATH (\`-\`\: standard output, and the summary goes to standard error)\: every attempt'\''s outcome, provider state changes, a summary]:PATH:_files' \
'--sandbox-dir=[Where --sandbox stores received messages]:DIR:_files -/' \
'--config=[Config file of default options \[default\: ./mailmerge.toml if present\]]:PATH:_files' \
'--dkim-key=[DKIM-sign every message with this PEM private key (RSA 2048+ or Ed25519)]:PEM:_files' \
'--dkim-selector=[DKIM selector\: the key is published at <SELECTOR>._domainkey.<DOMAIN>]:SELECTOR:_default' \
'--dkim-domain=[DKIM signing domain (d=) \[default\: each message'\''s From domain\]]:DOMAIN:_default' \
'*--list-unsubscribe=[Add List-Unsubscribe with this URI (templated per row, e.g. https\://acme.example/u/{{token}}); repeat for a mailto\: URI. An https URI also adds List-Unsubscribe-Post\: List-Unsubscribe=One-Click (RFC 8058)]:URI:_default' \
'--suppressions=[Suppression list (SQLite; shared safely by runs at once) \[default\: \$XDG_DATA_HOME/mailmerge/suppressions.sqlite, else ~/.local/share/...; with --sandbox <--sandbox-dir>.suppressions.sqlite\]]:PATH:_files' \
'--return-path=[Envelope sender (MAIL FROM) with a signed per-row token, so that a late bounce finds its row\: e.g. '\''bounces+{token}@acme.example'\'' (needs --verp-key). Overrides --from]:ADDRESS:_default' \
'--verp-key=[Secret key signing the --return-path tokens (HMAC-SHA256); keep it in the config file or use --verp-key-file]:KEY:_default' \
'--verp-key-file=[File holding the VERP key (surrounding white space ignored)]:PATH:_files' \
'--state=[The sender'\''s memory\: suspensions, learnt limits and daily counts per provider and source IP, shared by every run (SQLite) \[default\: \$XDG_DATA_HOME/mailmerge/ senders.sqlite, else ~/.local/share/...; with --sandbox <--sandbox-dir>.senders.sqlite\]]:PATH:_files' \
'--now=[Read the wall clock as this RFC 3339 instant at start (tests; days and suspensions)]:RFC3339:_default' \
'--no-private-mx[For domains under public names, never connect to MX addresses in private, loopback, link-local or shared ranges (a domain left with none bounces, 5.4.4)]' \
'--allow-duplicates[Send to repeated addresses too (default\: first row only; others are \`duplicate\`)]' \
'--no-chunking[Never use BDAT (RFC 3030 CHUNKING), even where offered\: send every message with DATA (a receiver whose CHUNKING is broken)]' \
'--dry-run[Render, resolve and print the delivery plan without connecting to any MX (= \`check\`)]' \
'--fresh[Forget earlier runs of this job (empty the journal) and send to every row again]' \
'--template-changed[The template changed since the journal was started (a fix during a campaign)\: go on with the journal instead of refusing; rows already delivered are not sent again]' \
'--journal-repair[A damaged journal record stops the run (exit 2); with this flag damaged records are skipped and their rows sent again]' \
'--no-received-header[Leave out the \`Received\:\` trace header that records the submission (list file, HELO name, run id and time) at the top of every message]' \
'--raw-csv[Write results cells exactly as they are. By default a cell that a spreadsheet would run as a formula (starting with =, +, -, @, tab or CR) gets a leading apostrophe]' \
'--timings[At the end, print to standard error how long each stage took and when the first SMTP session opened (where start-up time goes)]' \
'--sandbox[Run the whole job against an embedded loopback DNS server and SMTP receiver]' \
'-q[No progress output (errors still go to stderr)]' \
'--quiet[No progress output (errors still go to stderr)]' \
'--ignore-suppressions[Send to suppressed addresses too (transactional mail\: receipts, password resets); hard bounces are still recorded]' \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
':recipients -- CSV file with a header row; one recipient per row:_files' \
':template -- Template\: header block, blank line, body (see docs/templates.md):_files' \
&& ret=0
;;
(check-sender)
_arguments "${_arguments_options[@]}" : \
'--config=[Config file \[default\: ./mailmerge.toml if present\] (uses its dns and dkim-* keys)]:PATH:_files' \
'--dns=[Use this DNS server (IP\:PORT) instead of the system resolver]:IP:PORT:_default' \
'--dns-timeout=[DNS query timeout]:DURATION:_default' \
'--dkim-selector=[DKIM selector to look up at <SELECTOR>._domainkey.<DOMAIN>]:SELECTOR:_default' \
'--dkim-key=[Private key (PEM) whose public half must be the one published]:PEM:_files' \
'-h[Print help]' \
'--help[Print help]' \
':domain -- The domain messages are sent from (the From domain):_default' \
&& ret=0
;;
(suppress)
_arguments "${_arguments_options[@]}" : \
'--suppressions=[Suppression list (SQLite; shared safely by runs at once) \[default\: \$XDG_DATA_HOME/mailmerge/suppressions.sqlite, else ~/.local/share/...; with --sandbox <--sandbox-dir>.suppressions.sqlite\]]:PATH:_files' \
'--config=[Config file \[default\: ./mailmerge.toml if present\] (uses its suppressions key)]:PATH:_files' \
'-h[Print help]' \
'--help[Print help]' \
":: :_mailmerge__subcmd__suppress_commands" \
"*::: :->suppress" \
&& ret=0

    case $state in
    (suppress)
        words=($line[1] "${words[@]}")
        (( CURRENT += 1 ))
        curcontext="${curcontext%:*:*}:mailmerge-suppress-command-$line[1]:"
        case $line[1] in
            (list)
_arguments "${_arguments_options[@]}" : \
'--suppressions=[Suppression list (SQLite; shared safely by runs at once) \[default\: \$XDG_DATA_HOME/mailmerge/suppressions.sqlite, else ~/.local/share/...; with --sandbox <--sandbox-dir>.suppressions.sqlite\]]:PATH:_files' \
'--config=[Config file \[default\: ./mailmerge.toml if present\] (uses its suppressions key)]:PATH:_files' \
'-h[Print help]' \
'--help[Print help]' \
&& ret=0
;;
(add)
_arguments "${_arguments_options[@]}" : \
'--reason=[Why]:REASON:_default' \
'--note=[A note kept with the entry]:NOTE:_default' \
'--suppressions=[Suppression list (SQLite; shared safely by runs at once) \[default\: \$XDG_DATA_HOME/mailmerge/suppressions.sqlite, else ~/.local/share/...; with --sandbox <--sandbox-dir>.suppressions.sqlite\]]:PATH:_files' \
'--config=[Config file \[default\: ./mailmerge.toml if present\] (uses its suppressions key)]:PATH:_files' \
'-h[Print help]' \
'--help[Print help]' \
'*::addresses -- Addresses or @domains:_default' \
&& ret=0
;;
(remove)
_arguments "${_arguments_options[@]}" : \
'--suppressions=[Suppression list (SQLite; shared safely by runs at once) \[default\: \$XDG_DATA_HOME/mailmerge/suppressions.sqlite, else ~/.local/share/...; with --sandbox <--sandbox-dir>.suppressions.sqlite\]]:PATH:_files' \
'--config=[Config file \[default\: ./mailmerge.toml if present\] (uses its suppressions key)]:PATH:_files' \
'-h[Print help]' \
'--help[Print help]' \
'*::addresses -- Addresses or @domains:_default' \
&& ret=0
;;
(import)
_arguments "${_arguments_options[@]}" : \
'--column=[Column holding the addresses]:COLUMN:_default' \
'--reason=[Reason for rows without a \`reason\` column]:REASON:_default' \
'--suppressions=[Suppression list (SQLite; shared safely by runs at once) \[default\: \$XDG_DATA_HOME/mailmerge/suppressions.sqlite, else ~/.local/share/...; with --sandbox <--sandbox-dir>.suppressions.sqlite\]]:PATH:_files' \
'--config=[Config file \[default\: ./mailmerge.toml if present\] (uses its suppressions key)]:PATH:_files' \
'-h[Print help]' \
'--help[Print help]' \
':file -- CSV file with a header row:_files' \
&& ret=0
;;
(export)
_arguments "${_arguments_options[@]}" : \
'--suppressions=[Suppression list (SQLite; shared safely by runs at once) \[default\: \$XDG_DATA_HOME/mailmerge/suppressions.sqlite, else ~/.local/share/...; with --sandbox <--sandbox-dir>.suppressions.sqlite\]]:PATH:_files' \
'--config=[Config file \[default\: ./mailmerge.toml if present\] (uses its suppressions key)]:PATH:_files' \
'-h[Print help]' \
'--help[Print help]' \
'::file -- Output file:_files' \
&& ret=0
;;
(help)
_arguments "${_arguments_options[@]}" : \
":: :_mailmerge__subcmd__suppress__subcmd__help_commands" \
"*::: :->help" \
&& ret=0

    case $state in
    (help)
        words=($line[1] "${words[@]}")
        (( CURRENT += 1 ))
        curcontext="${curcontext%:*:*}:mailmerge-suppress-help-command-$line[1]:"
        case $line[1] in
            (list)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(add)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(remove)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(import)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(export)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(help)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
        esac
    ;;
esac
;;
        esac
    ;;
esac
;;
(bounces)
_arguments "${_arguments_options[@]}" : \
'--max-report-size=[Read at most SIZE of each message (bytes, or with K, M, G); the report and the returned message'\''s headers are at its top, the rest is skipped]:SIZE:_default' \
'--imap-password-env=[Environment variable holding the IMAP password]:NAME:_default' \
'--imap-password=[The IMAP password, from the config file only (\`imap-password = "..."\`); refused on the command line]:PASSWORD:_default' \
'--imap-move-to=[Move each processed IMAP message to FOLDER (created if missing) instead of remembering the highest UID read]:FOLDER:_default' \
'*--tls-ca=[PEM file of extra trusted root certificates for the IMAP server (a private CA); repeatable]:FILE:_files' \
'--suppressions=[Suppression list (SQLite; shared safely by runs at once) \[default\: \$XDG_DATA_HOME/mailmerge/suppressions.sqlite, else ~/.local/share/...; with --sandbox <--sandbox-dir>.suppressions.sqlite\]]:PATH:_files' \
'--verp-key=[Secret key signing the --return-path tokens (HMAC-SHA256); keep it in the config file or use --verp-key-file]:KEY:_default' \
'--verp-key-file=[File holding the VERP key (surrounding white space ignored)]:PATH:_files' \
'--config=[Config file \[default\: ./mailmerge.toml if present\]]:PATH:_files' \
'--dry-run[Change nothing (no results CSV, journal, suppression list or IMAP watermark)\: only say what a real run would do with each report]' \
'--json[One JSON object per line (per recipient of each message) instead of a table]' \
'-h[Print help]' \
'--help[Print help]' \
'*::paths -- Maildir folders, mbox files, single .eml files, or an IMAP mailbox imaps\://USER@HOST\[\:PORT\]/MAILBOX (password from $MAILMERGE_IMAP_PASSWORD or the config file'\''s imap-password, never the command line):_files' \
&& ret=0
;;
(senders)
_arguments "${_arguments_options[@]}" : \
'--clear=[Forget what is remembered of this provider (or unknown site)\: learnt limits and suspensions; today'\''s counts stay (a cap stays a cap)]:PROVIDER:_default' \
'--source=[With --clear\: only from this source IP]:IP:_default' \
'--state=[The sender'\''s memory\: suspensions, learnt limits and daily counts per provider and source IP, shared by every run (SQLite) \[default\: \$XDG_DATA_HOME/mailmerge/ senders.sqlite, else ~/.local/share/...; with --sandbox <--sandbox-dir>.senders.sqlite\]]:PATH:_files' \
'--now=[Read the wall clock as this RFC 3339 instant at start (tests; days and suspensions)]:RFC3339:_default' \
'--config=[Config file \[default\: ./mailmerge.toml if present\] (uses its state key)]:PATH:_files' \
'-h[Print help]' \
'--help[Print help]' \
&& ret=0
;;
(merge-results)
_arguments "${_arguments_options[@]}" : \
'--list=[The list the shards were run on (gives the rows, their order, and the address and values each result row must have)]:PATH:_files' \
'-o+[The merged results CSV]:PATH:_files' \
'--output=[The merged results CSV]:PATH:_files' \
'--email-column=[Column of LIST holding the recipient address (as given to \`run\`)]:NAME:_default' \
'-h[Print help]' \
'--help[Print help]' \
'*::results -- The shards'\'' results CSVs (any order):_files' \
&& ret=0
;;
(report)
_arguments "${_arguments_options[@]}" : \
'-o+[The HTML file \[default\: <RESULTS stem>.html beside it; needed with several files\]]:PATH:_files' \
'--output=[The HTML file \[default\: <RESULTS stem>.html beside it; needed with several files\]]:PATH:_files' \
'*--events=[The run'\''s event stream (\`run --events FILE\`; one per shard)\: the timeline then marks every throttling reply and provider state change, not only what the results show]:FILE:_files' \
'--max-domains=[Domains (and providers or sites) listed at most in the tables\: those with the most rows]:N:_default' \
'-h[Print help]' \
'--help[Print help]' \
'*::results -- The results CSV; or the results of every shard of one campaign, added up:_files' \
&& ret=0
;;
(generate)
_arguments "${_arguments_options[@]}" : \
'-h[Print help]' \
'--help[Print help]' \
":: :_mailmerge__subcmd__generate_commands" \
"*::: :->generate" \
&& ret=0

    case $state in
    (generate)
        words=($line[1] "${words[@]}")
        (( CURRENT += 1 ))
        curcontext="${curcontext%:*:*}:mailmerge-generate-command-$line[1]:"
        case $line[1] in
            (man)
_arguments "${_arguments_options[@]}" : \
'-h[Print help]' \
'--help[Print help]' \
':dir -- Folder for the pages:_files -/' \
&& ret=0
;;
(completions)
_arguments "${_arguments_options[@]}" : \
'-h[Print help]' \
'--help[Print help]' \
':shell -- bash, zsh, fish, elvish or powershell:(bash elvish fish powershell zsh)' \
&& ret=0
;;
(help)
_arguments "${_arguments_options[@]}" : \
":: :_mailmerge__subcmd__generate__subcmd__help_commands" \
"*::: :->help" \
&& ret=0

    case $state in
    (help)
        words=($line[1] "${words[@]}")
        (( CURRENT += 1 ))
        curcontext="${curcontext%:*:*}:mailmerge-generate-help-command-$line[1]:"
        case $line[1] in
            (man)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(completions)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(help)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
        esac
    ;;
esac
;;
        esac
    ;;
esac
;;
(help)
_arguments "${_arguments_options[@]}" : \
":: :_mailmerge__subcmd__help_commands" \
"*::: :->help" \
&& ret=0

    case $state in
    (help)
        words=($line[1] "${words[@]}")
        (( CURRENT += 1 ))
        curcontext="${curcontext%:*:*}:mailmerge-help-command-$line[1]:"
        case $line[1] in
            (run)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(check)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(check-sender)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(suppress)
_arguments "${_arguments_options[@]}" : \
":: :_mailmerge__subcmd__help__subcmd__suppress_commands" \
"*::: :->suppress" \
&& ret=0

    case $state in
    (suppress)
        words=($line[1] "${words[@]}")
        (( CURRENT += 1 ))
        curcontext="${curcontext%:*:*}:mailmerge-help-suppress-command-$line[1]:"
        case $line[1] in
            (list)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(add)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(remove)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(import)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(export)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
        esac
    ;;
esac
;;
(bounces)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(senders)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(merge-results)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(report)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(generate)
_arguments "${_arguments_options[@]}" : \
":: :_mailmerge__subcmd__help__subcmd__generate_commands" \
"*::: :->generate" \
&& ret=0

    case $state in
    (generate)
        words=($line[1] "${words[@]}")
        (( CURRENT += 1 ))
        curcontext="${curcontext%:*:*}:mailmerge-help-generate-command-$line[1]:"
        case $line[1] in
            (man)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(completions)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
        esac
    ;;
esac
;;
(help)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
        esac
    ;;
esac
;;
        esac
    ;;
esac
}

(( $+functions[_mailmerge_commands] )) ||
_mailmerge_commands() {
    local commands; commands=(
'run:Render and deliver every row of RECIPIENTS with TEMPLATE; write a results CSV' \
'check:Validate the list, render every message and resolve every domain; print the plan and send nothing. Exits 1 if any row could not be sent. Takes the same options as \`run\`' \
'check-sender:Check the sender domain'\''s DNS (SPF, DKIM, DMARC); print what to publish' \
'suppress:Manage the suppression list\: addresses no campaign sends to (docs/list-hygiene.md)' \
'bounces:Read late bounces and complaints (Maildir folders, mbox or .eml files, an IMAP mailbox); mark their rows bounced in the campaign'\''s results CSV and suppress the addresses. --dry-run only says what it would do' \
'senders:What is remembered per provider and source IP (learnt limits, suspensions, today'\''s counts, warm-up day); clear an entry with --clear' \
'merge-results:Join the results of \`run --shard 0/N\` … \`N-1/N\` into one results CSV in the list'\''s order. Exits 2, naming the rows, unless every row of LIST appears exactly once, with LIST'\''s address and values, in LIST'\''s order within each input' \
'report:Write an HTML report of a results CSV (or of a sharded campaign'\''s results)\: totals, providers, domains, why not delivered, a timeline, TLS. One self-contained file' \
'generate:Write the man pages or print shell completions (generated from these definitions)' \
'help:Print this message or the help of the given subcommand(s)' \
    )
    _describe -t commands 'mailmerge commands' commands "$@"
}
(( $+functions[_mailmerge__subcmd__bounces_commands] )) ||
_mailmerge__subcmd__bounces_commands() {
    local commands; commands=()
    _describe -t commands 'mailmerge bounces commands' commands "$@"
}
(( $+functions[_mailmerge__subcmd__check_commands] )) ||
_mailmerge__subcmd__check_commands() {
    local commands; commands=()
    _describe -t commands 'mailmerge check commands' commands "$@"
}
(( $+functions[_mailmerge__subcmd__check-sender_commands] )) ||
_mailmerge__subcmd__check-sender_commands() {
    local commands; commands=()
    _describe -t commands 'mailmerge check-sender commands' commands "$@"
}
(( $+functions[_mailmerge__subcmd__generate_commands] )) ||
_mailmerge__subcmd__generate_commands() {
    local commands; commands=(
'man:Write mailmerge.1 and one page per subcommand (mailmerge-run.1, …) into DIR' \
'completions:Print the completion script for SHELL on stdout' \
'help:Print this message or the help of the given subcommand(s)' \
    )
    _describe -t commands 'mailmerge generate commands' commands "$@"
}
(( $+functions[_mailmerge__subcmd__generate__subcmd__completions_commands] )) ||
_mailmerge__subcmd__generate__subcmd__completions_commands() {
    local commands; commands=()
    _describe -t commands 'mailmerge generate completions commands' commands "$@"
}
(( $+functions[_mailmerge__subcmd__generate__subcmd__help_commands] )) ||
_mailmerge__subcmd__generate__subcmd__help_commands() {
    local commands; commands=(
'man:Write mailmerge.1 and one page per subcommand (mailmerge-run.1, …) into DIR' \
'completions:Print the completion script for SHELL on stdout' \
'help:Print this message or the help of the given subcommand(s)' \
    )
    _describe -t commands 'mailmerge generate help commands' commands "$@"
}
(( $+functions[_mailmerge__subcmd__generate__subcmd__help__subcmd__completions_commands] )) ||
_mailmerge__subcmd__generate__subcmd__help__subcmd__completions_commands() {
    local commands; commands=()
    _describe -t commands 'mailmerge generate help completions commands' commands "$@"
}
(( $+functions[_mailmerge__subcmd__generate__subcmd__help__subcmd__help_commands] )) ||
_mailmerge__subcmd__generate__subcmd__help__subcmd__help_commands() {
    local commands; commands=()
    _describe -t commands 'mailmerge generate help help commands' commands "$@"
}
(( $+functions[_mailmerge__subcmd__generate__subcmd__help__subcmd__man_commands] )) ||
_mailmerge__subcmd__generate__subcmd__help__subcmd__man_commands() {
    local commands; commands=()
    _describe -t commands 'mailmerge generate help man commands' commands "$@"
}
(( $+functions[_mailmerge__subcmd__generate__subcmd__man_commands] )) ||
_mailmerge__subcmd__generate__subcmd__man_commands() {
    local commands; commands=()
    _describe -t commands 'mailmerge generate man commands' commands "$@"
}
(( $+functions[_mailmerge__subcmd__help_commands] )) ||
_mailmerge__subcmd__help_commands() {
    local commands; commands=(
'run:Render and deliver every row of RECIPIENTS with TEMPLATE; write a results CSV' \
'check:Validate the list, render every message and resolve every domain; print the plan and send nothing. Exits 1 if any row could not be sent. Takes the same options as \`run\`' \
'check-sender:Check the sender domain'\''s DNS (SPF, DKIM, DMARC); print what to publish' \
'suppress:Manage the suppression list\: addresses no campaign sends to (docs/list-hygiene.md)' \
'bounces:Read late bounces and complaints (Maildir folders, mbox or .eml files, an IMAP mailbox); mark their rows bounced in the campaign'\''s results CSV and suppress the addresses. --dry-run only says what it would do' \
'senders:What is remembered per provider and source IP (learnt limits, suspensions, today'\''s counts, warm-up day); clear an entry with --clear' \
'merge-results:Join the results of \`run --shard 0/N\` … \`N-1/N\` into one results CSV in the list'\''s order. Exits 2, naming the rows, unless every row of LIST appears exactly once, with LIST'\''s address and values, in LIST'\''s order within each input' \
'report:Write an HTML report of a results CSV (or of a sharded campaign'\''s results)\: totals, providers, domains, why not delivered, a timeline, TLS. One self-contained file' \
'generate:Write the man pages or print shell completions (generated from these definitions)' \
'help:Print this message or the help of the given subcommand(s)' \
    )
    _describe -t commands 'mailmerge help commands' commands "$@"
}
(( $+functions[_mailmerge__subcmd__help__subcmd__bounces_commands] )) ||
_mailmerge__subcmd__help__subcmd__bounces_commands() {
    local commands; commands=()
    _describe -t commands 'mailmerge help bounces commands' commands "$@"
}
(( $+functions[_mailmerge__subcmd__help__subcmd__check_commands] )) ||
_mailmerge__subcmd__help__subcmd__check_commands() {
    local commands; commands=()
    _describe -t commands 'mailmerge help check commands' commands "$@"
}
(( $+functions[_mailmerge__subcmd__help__subcmd__check-sender_commands] )) ||
_mailmerge__subcmd__help__subcmd__check-sender_commands() {
    local commands; commands=()
    _describe -t commands 'mailmerge help check-sender commands' commands "$@"
}
(( $+functions[_mailmerge__subcmd__help__subcmd__generate_commands] )) ||
_mailmerge__subcmd__help__subcmd__generate_commands() {
    local commands; commands=(
'man:Write mailmerge.1 and one page per subcommand (mailmerge-run.1, …) into DIR' \
'completions:Print the completion script for SHELL on stdout' \
    )
    _describe -t commands 'mailmerge help generate commands' commands "$@"
}
(( $+functions[_mailmerge__subcmd__help__subcmd__generate__subcmd__completions_commands] )) ||
_mailmerge__subcmd__help__subcmd__generate__subcmd__completions_commands() {
    local commands; commands=()
    _describe -t commands 'mailmerge help generate completions commands' commands "$@"
}
(( $+functions[_mailmerge__subcmd__help__subcmd__generate__subcmd__man_commands] )) ||
_mailmerge__subcmd__help__subcmd__generate__subcmd__man_commands() {
    local commands; commands=()
    _describe -t commands 'mailmerge help generate man commands' commands "$@"
}
(( $+functions[_mailmerge__subcmd__help__subcmd__help_commands] )) ||
_mailmerge__subcmd__help__subcmd__help_commands() {
    local commands; commands=()
    _describe -t commands 'mailmerge help help commands' commands "$@"
}
(( $+functions[_mailmerge__subcmd__help__subcmd__merge-results_commands] )) ||
_mailmerge__subcmd__help__subcmd__merge-results_commands() {
    local commands; commands=()
    _describe -t commands 'mailmerge help merge-results commands' commands "$@"
}
(( $+functions[_mailmerge__subcmd__help__subcmd__report_commands] )) ||
_mailmerge__subcmd__help__subcmd__report_commands() {
    local commands; commands=()
    _describe -t commands 'mailmerge help report commands' commands "$@"
}
(( $+functions[_mailmerge__subcmd__help__subcmd__run_commands] )) ||
_mailmerge__subcmd__help__subcmd__run_commands() {
    local commands; commands=()
    _describe -t commands 'mailmerge help run commands' commands "$@"
}
(( $+functions[_mailmerge__subcmd__help__subcmd__senders_commands] )) ||
_mailmerge__subcmd__help__subcmd__senders_commands() {
    local commands; commands=()
    _describe -t commands 'mailmerge help senders commands' commands "$@"
}
(( $+functions[_mailmerge__subcmd__help__subcmd__suppress_commands] )) ||
_mailmerge__subcmd__help__subcmd__suppress_commands() {
    local commands; commands=(
'list:Print every entry as CSV (address, reason, cause, campaign, created)' \
'add:Suppress addresses, or whole domains written @domain' \
'remove:Take addresses (or @domains) off the list' \
'import:Add the addresses of a CSV file, e.g. another tool'\''s unsubscribe export. A whole domain only on rows whose \`kind\` column says \`domain\`; a line that cannot be used is reported with its number and skipped' \
'export:Write every entry as CSV to FILE (or stdout when omitted or \`-\`), formula-like cells defused with a leading apostrophe' \
    )
    _describe -t commands 'mailmerge help suppress commands' commands "$@"
}
(( $+functions[_mailmerge__subcmd__help__subcmd__suppress__subcmd__add_commands] )) ||
_mailmerge__subcmd__help__subcmd__suppress__subcmd__add_commands() {
    local commands; commands=()
    _describe -t commands 'mailmerge help suppress add commands' commands "$@"
}
(( $+functions[_mailmerge__subcmd__help__subcmd__suppress__subcmd__export_commands] )) ||
_mailmerge__subcmd__help__subcmd__suppress__subcmd__export_commands() {
    local commands; commands=()
    _describe -t commands 'mailmerge help suppress export commands' commands "$@"
}
(( $+functions[_mailmerge__subcmd__help__subcmd__suppress__subcmd__import_commands] )) ||
_mailmerge__subcmd__help__subcmd__suppress__subcmd__import_commands() {
    local commands; commands=()
    _describe -t commands 'mailmerge help suppress import commands' commands "$@"
}
(( $+functions[_mailmerge__subcmd__help__subcmd__suppress__subcmd__list_commands] )) ||
_mailmerge__subcmd__help__subcmd__suppress__subcmd__list_commands() {
    local commands; commands=()
    _describe -t commands 'mailmerge help suppress list commands' commands "$@"
}
(( $+functions[_mailmerge__subcmd__help__subcmd__suppress__subcmd__remove_commands] )) ||
_mailmerge__subcmd__help__subcmd__suppress__subcmd__remove_commands() {
    local commands; commands=()
    _describe -t commands 'mailmerge help suppress remove commands' commands "$@"
}
(( $+functions[_mailmerge__subcmd__merge-results_commands] )) ||
_mailmerge__subcmd__merge-results_commands() {
    local commands; commands=()
    _describe -t commands 'mailmerge merge-results commands' commands "$@"
}
(( $+functions[_mailmerge__subcmd__report_commands] )) ||
_mailmerge__subcmd__report_commands() {
    local commands; commands=()
    _describe -t commands 'mailmerge report commands' commands "$@"
}
(( $+functions[_mailmerge__subcmd__run_commands] )) ||
_mailmerge__subcmd__run_commands() {
    local commands; commands=()
    _describe -t commands 'mailmerge run commands' commands "$@"
}
(( $+functions[_mailmerge__subcmd__senders_commands] )) ||
_mailmerge__subcmd__senders_commands() {
    local commands; commands=()
    _describe -t commands 'mailmerge senders commands' commands "$@"
}
(( $+functions[_mailmerge__subcmd__suppress_commands] )) ||
_mailmerge__subcmd__suppress_commands() {
    local commands; commands=(
'list:Print every entry as CSV (address, reason, cause, campaign, created)' \
'add:Suppress addresses, or whole domains written @domain' \
'remove:Take addresses (or @domains) off the list' \
'import:Add the addresses of a CSV file, e.g. another tool'\''s unsubscribe export. A whole domain only on rows whose \`kind\` column says \`domain\`; a line that cannot be used is reported with its number and skipped' \
'export:Write every entry as CSV to FILE (or stdout when omitted or \`-\`), formula-like cells defused with a leading apostrophe' \
'help:Print this message or the help of the given subcommand(s)' \
    )
    _describe -t commands 'mailmerge suppress commands' commands "$@"
}
(( $+functions[_mailmerge__subcmd__suppress__subcmd__add_commands] )) ||
_mailmerge__subcmd__suppress__subcmd__add_commands() {
    local commands; commands=()
    _describe -t commands 'mailmerge suppress add commands' commands "$@"
}
(( $+functions[_mailmerge__subcmd__suppress__subcmd__export_commands] )) ||
_mailmerge__subcmd__suppress__subcmd__export_commands() {
    local commands; commands=()
    _describe -t commands 'mailmerge suppress export commands' commands "$@"
}
(( $+functions[_mailmerge__subcmd__suppress__subcmd__help_commands] )) ||
_mailmerge__subcmd__suppress__subcmd__help_commands() {
    local commands; commands=(
'list:Print every entry as CSV (address, reason, cause, campaign, created)' \
'add:Suppress addresses, or whole domains written @domain' \
'remove:Take addresses (or @domains) off the list' \
'import:Add the addresses of a CSV file, e.g. another tool'\''s unsubscribe export. A whole domain only on rows whose \`kind\` column says \`domain\`; a line that cannot be used is reported with its number and skipped' \
'export:Write every entry as CSV to FILE (or stdout when omitted or \`-\`), formula-like cells defused with a leading apostrophe' \
'help:Print this message or the help of the given subcommand(s)' \
    )
    _describe -t commands 'mailmerge suppress help commands' commands "$@"
}
(( $+functions[_mailmerge__subcmd__suppress__subcmd__help__subcmd__add_commands] )) ||
_mailmerge__subcmd__suppress__subcmd__help__subcmd__add_commands() {
    local commands; commands=()
    _describe -t commands 'mailmerge suppress help add commands' commands "$@"
}
(( $+functions[_mailmerge__subcmd__suppress__subcmd__help__subcmd__export_commands] )) ||
_mailmerge__subcmd__suppress__subcmd__help__subcmd__export_commands() {
    local commands; commands=()
    _describe -t commands 'mailmerge suppress help export commands' commands "$@"
}
(( $+functions[_mailmerge__subcmd__suppress__subcmd__help__subcmd__help_commands] )) ||
_mailmerge__subcmd__suppress__subcmd__help__subcmd__help_commands() {
    local commands; commands=()
    _describe -t commands 'mailmerge suppress help help commands' commands "$@"
}
(( $+functions[_mailmerge__subcmd__suppress__subcmd__help__subcmd__import_commands] )) ||
_mailmerge__subcmd__suppress__subcmd__help__subcmd__import_commands() {
    local commands; commands=()
    _describe -t commands 'mailmerge suppress help import commands' commands "$@"
}
(( $+functions[_mailmerge__subcmd__suppress__subcmd__help__subcmd__list_commands] )) ||
_mailmerge__subcmd__suppress__subcmd__help__subcmd__list_commands() {
    local commands; commands=()
    _describe -t commands 'mailmerge suppress help list commands' commands "$@"
}
(( $+functions[_mailmerge__subcmd__suppress__subcmd__help__subcmd__remove_commands] )) ||
_mailmerge__subcmd__suppress__subcmd__help__subcmd__remove_commands() {
    local commands; commands=()
    _describe -t commands 'mailmerge suppress help remove commands' commands "$@"
}
(( $+functions[_mailmerge__subcmd__suppress__subcmd__import_commands] )) ||
_mailmerge__subcmd__suppress__subcmd__import_commands() {
    local commands; commands=()
    _describe -t commands 'mailmerge suppress import commands' commands "$@"
}
(( $+functions[_mailmerge__subcmd__suppress__subcmd__list_commands] )) ||
_mailmerge__subcmd__suppress__subcmd__list_commands() {
    local commands; commands=()
    _describe -t commands 'mailmerge suppress list commands' commands "$@"
}
(( $+functions[_mailmerge__subcmd__suppress__subcmd__remove_commands] )) ||
_mailmerge__subcmd__suppress__subcmd__remove_commands() {
    local commands; commands=()
    _describe -t commands 'mailmerge suppress remove commands' commands "$@"
}

if [ "$funcstack[1]" = "_mailmerge" ]; then
    _mailmerge "$@"
else
    compdef _mailmerge mailmerge
fi

/*
** journal_cli — `luahook events` (list, show) and `luahook replay`: the operator's look at
** the journal of a state folder, with the server running or stopped. Parses its own
** arguments (they are not the server's options).
*/
#ifndef LH_JOURNAL_CLI_H
#define LH_JOURNAL_CLI_H

/** 1 if argv names one of these commands. */
int lh_journal_cli_is(int argc, char **argv);

/** Runs it; the exit code: 0 done, 1 no such delivery, 2 usage or state folder error. */
int lh_journal_cli_run(int argc, char **argv);

#endif

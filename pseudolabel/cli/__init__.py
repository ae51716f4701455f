"""The `pseudolabel` command: a thin layer over the Python API.

Each concern has its own module here (cli/data.py, cli/models.py, ...) defining click commands;
heavy imports (TensorFlow) happen inside the commands so `--help` stays fast. Every command runs
under `common.GuardedGroup`: an error it raises is one line, never a bare traceback.
"""

import click

from pseudolabel import __version__
from pseudolabel.cli.common import GuardedGroup, data_warnings_as_lines


@click.group(cls=GuardedGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="pseudolabel")
@click.option("-v", "--verbose", is_flag=True,
              help="Show TensorFlow's start-up banners and retracing warnings (hidden by default).")
def main(verbose):
    """Semi-supervised pseudo-labeling (Noisy Student) for image classification.

    Typical flow: `data split` once, `teach` a supervised teacher, `label` the unlabeled pools,
    train a `student` on labeled + pseudo-labeled images, `compare` the runs. `run` does all of
    it for an experiment file; `demo` shows it end to end on synthetic images in a few minutes.
    """
    from pseudolabel import quiet

    quiet.verbose_tensorflow() if verbose else quiet.quiet_tensorflow()
    data_warnings_as_lines()


def _register():
    # One line per command module; each exposes `commands`, a list of click commands/groups.
    from pseudolabel.cli import curve as _curve
    from pseudolabel.cli import data as _data
    from pseudolabel.cli import demo as _demo
    from pseudolabel.cli import label as _label
    from pseudolabel.cli import models as _models
    from pseudolabel.cli import predict as _predict
    from pseudolabel.cli import report as _report
    from pseudolabel.cli import run as _run
    from pseudolabel.cli import serve as _serve
    from pseudolabel.cli import train as _train

    for module in (_curve, _data, _demo, _label, _models, _predict, _report, _run, _serve, _train):
        for command in module.commands:
            main.add_command(command)


_register()

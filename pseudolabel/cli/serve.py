"""`pseudolabel serve`: a web page and JSON API over one trained run (needs the `serve` extra)."""

from __future__ import annotations

from pathlib import Path

import click

from pseudolabel.cli.common import fail_cleanly


@click.command("serve")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0 makes the page reachable from other machines).")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--labels", "labels_csv", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Labels CSV the 'label next' answers are appended to [default: the labels CSV the run recorded].")
@click.option("--image-root", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Data root the run's image names are relative to [default: the data root the run recorded].")
@click.option("--pool", "pools", multiple=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of unlabeled images to offer for labeling (repeatable) [default: the run's pools].")
@click.option("--report", "report_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Report folder with visual.html [default: the experiment's report/].")
@click.option("--max-upload-mb", type=click.FloatRange(min=0.01), default=16, show_default=True,
              help="Largest upload accepted (bigger ones get HTTP 413).")
@fail_cleanly
def serve(run_dir, host, port, labels_csv, image_root, pools, report_dir, max_upload_mb):
    """Serve RUN_DIR's model: upload an image and see the class probabilities (/), a JSON API
    (POST /predict with multipart field 'file'; GET /health), the run's report (/report), and the
    pool images the model is least sure of to label next (/label), appended to the labels CSV.
    """
    try:
        from pseudolabel.serve import ServeError, create_app
    except ImportError as err:
        raise click.ClickException(f"serve needs Flask ({err}); install it with: pip install 'pseudolabel[serve]'") from None
    from pseudolabel.pseudolabels import PseudoLabelError

    try:
        app = create_app(run_dir, labels_csv=labels_csv, image_root=image_root, pools=pools,
                         report_dir=report_dir, max_upload_mb=max_upload_mb)
    except (ServeError, PseudoLabelError) as err:
        raise click.ClickException(str(err)) from None
    app.extensions["pseudolabel"].warm_up()
    click.echo(f"serving {run_dir} on http://{host}:{port}/ (Ctrl-C stops); predicting the pool for "
               "/label in the background")
    app.run(host=host, port=port, threaded=True, debug=False, use_reloader=False)


commands = [serve]

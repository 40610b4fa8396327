"""Packaging for perturbdiff: every field comes from settings.ini (nbdev 2 convention)."""
from configparser import ConfigParser
from pathlib import Path

import setuptools

here = Path(__file__).parent
config = ConfigParser(delimiters=['='])
if not config.read(here / 'settings.ini', encoding='utf-8'):
    raise FileNotFoundError(f"{here / 'settings.ini'} is missing: setup.py reads every field from it (MANIFEST.in puts "
                            "it in the sdist).")
cfg = config['DEFAULT']

# name, classifier, SPDX
licenses = {'apache2': ('Apache Software License 2.0', 'OSI Approved :: Apache Software License', 'Apache-2.0')}
statuses = ['1 - Planning', '2 - Pre-Alpha', '3 - Alpha', '4 - Beta', '5 - Production/Stable', '6 - Mature',
            '7 - Inactive']
py_versions = '3.10 3.11 3.12 3.13'.split()

lic = licenses[cfg['license'].lower()]
# setuptools >= 77 writes PEP 639's License-Expression (and deprecates license classifiers); older ones the License
# field
spdx = int(setuptools.__version__.split('.')[0]) >= 77
license_meta = dict(license_expression=lic[2], license_files=['LICENSE']) if spdx else dict(license=lic[0])
status = next((s for s in statuses if s.split(' ')[0] == cfg['status']), None)  # the number is the classifier's (not
                                                                                # nbdev's off-by-one)
if status is None:
    raise ValueError(f"settings.ini: status = {cfg['status']!r} is not a Development Status number; use one of "
                     f"{statuses}.")
min_python = cfg['min_python']
requirements = cfg.get('requirements', '').split()
dev_requirements = cfg.get('dev_requirements', '').split()
drug_requirements = cfg.get('drug_requirements', '').split()

setuptools.setup(
    name=cfg['lib_name'],
    version=cfg['version'],
    description=cfg['description'],
    long_description=(here / 'PYPI.md').read_text(encoding='utf-8'),  # for PyPI users; README.md is the developers'
    # page
    long_description_content_type='text/markdown',
    author=cfg['author'],
    author_email=cfg['author_email'],
    **license_meta,
    url=cfg['git_url'],
    project_urls={
        'Documentation': cfg['doc_host'] + cfg['doc_baseurl'],
        'Source': cfg['git_url'],
        'Issues': cfg['git_url'] + '/issues',
    },
    keywords=cfg['keywords'].split(),
    classifiers=[
        'Development Status :: ' + status,
        'Intended Audience :: ' + cfg['audience'],
        'Natural Language :: ' + cfg['language'],
        'Topic :: Scientific/Engineering :: Bio-Informatics',
    ]
    + ([] if spdx else ['License :: ' + lic[1]])
    + ['Programming Language :: Python :: ' + v for v in py_versions[py_versions.index(min_python) :]],
    packages=setuptools.find_packages(include=['perturbdiff', 'perturbdiff.*']),
    include_package_data=True,
    python_requires='>=' + min_python,
    install_requires=requirements,
    extras_require={'dev': dev_requirements + drug_requirements, 'drugs': drug_requirements},
    entry_points={
        'console_scripts': cfg['console_scripts'].split(),
        'nbdev': [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"],
    },
    zip_safe=False,
)
